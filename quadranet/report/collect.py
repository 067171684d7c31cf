"""Read run folders into pandas: one row per (experiment role, run), one row per log line, bench rows.

A results folder holds `manifest.tsv` (exp, backbone, method, variant, seed, run: written by the workflow)
and `runs/<run>/` (metrics.json, config.yaml, log.jsonl written by `quadranet train` / `quadranet detect
train`), optionally `bench/*.csv`. Reference runs measured elsewhere keep the same layout under
`<reference>/<hardware>/`; their rows carry that folder's name as `hardware`, local rows "this machine (...)".
Nested keys are flattened with dots (`device_seconds.train`, `quadratic_share.end.median`); config keys get the
prefix `cfg.` (the engine's method is `cfg.method`; `method` is the workflow's label, e.g. fo_scratch).
`train_s` = device_seconds.train (the cost as the paper counts it: training, data loading inside), `eval_s` = the
evaluations after the first optimizer step, `cost_s` = both (the evaluation before training apart).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable, Optional, Union

import pandas as pd
import yaml

from .. import atomic
from ..bench.results import read_bench
from ..experiments.registry import MANIFEST_COLUMNS

PathLike = Union[str, Path]


def flatten(d: dict, prefix: str = "") -> dict:
    """{'a': {'b': 1}, 'c': [1]} -> {'a.b': 1, 'c': '[1]'} (lists as JSON, so a row stays flat)."""
    out = {}
    for key, value in d.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = json.dumps(value) if isinstance(value, list) else value
    return out


def hardware_label(metrics: dict) -> str:
    """'this machine (<GPU or CPU model>)' from a run's provenance."""
    hw = (metrics.get("provenance") or {}).get("hardware") or {}
    if hw.get("gpu_count"):
        name = f"{hw.get('gpu_count')}x {hw.get('gpu_name')}"
    else:
        name = f"{hw.get('cpu_model') or 'CPU'}, {hw.get('cpu_count') or '?'} cores"
    return f"this machine ({name})"


def initial_eval_s(log: pd.DataFrame) -> float:
    """device_s of a log's evaluation before training (tag 'initial'), 0 when there is none."""
    if log.empty or "tag" not in log:
        return 0.0
    init = log[(log["event"] == "eval") & (log["tag"] == "initial")]
    return float(init["device_s"].min()) if len(init) else 0.0


def read_run(run_dir: PathLike, log: Optional[pd.DataFrame] = None) -> Optional[dict]:
    """The flat record of a finished run folder (None while metrics.json is missing); `log`: its log.jsonl
    (read when not given)."""
    run_dir = Path(run_dir)
    metrics_file = run_dir / "metrics.json"
    if not metrics_file.is_file():
        return None
    metrics = json.loads(metrics_file.read_text())
    row = flatten({k: v for k, v in metrics.items() if k != "provenance"})
    prov = metrics.get("provenance") or {}
    row.update(flatten({k: v for k, v in prov.items() if k != "config"}, "provenance."))
    cfg_file = run_dir / "config.yaml"
    cfg = yaml.safe_load(cfg_file.read_text()) if cfg_file.is_file() else prov.get("config") or {}
    row.update(flatten(cfg, "cfg."))
    secs = metrics.get("device_seconds") or {}
    if "train" in secs:  # the cost of a run: its own training and evaluation from the first optimizer step,
        # start-up apart (design section 4); older runs counted the initial evaluation in `eval`: taken off here
        old = 0.0 if "initial_eval" in secs else initial_eval_s(read_log(run_dir) if log is None else log)
        row["cost_s"] = secs["train"] + secs.get("eval", 0.0) - old
        row["train_s"], row["eval_s"] = secs["train"], secs.get("eval", 0.0) - old
    row["hardware_name"] = hardware_label(metrics)
    return row


def read_log(run_dir: PathLike) -> pd.DataFrame:
    """log.jsonl of a run as a DataFrame (empty when there is none)."""
    path = Path(run_dir) / "log.jsonl"
    if not path.is_file():
        return pd.DataFrame()
    lines = [json.loads(s) for s in path.read_text().splitlines() if s.strip()]
    return pd.DataFrame(lines)


def pretrained_run(value) -> Optional[str]:
    """Run id of a model.pretrained value that names a run folder ('.../runs/<id>'), else None."""
    if not isinstance(value, str) or "runs/" not in value:
        return None
    return value.rstrip("/").split("runs/", 1)[1]


def collect_results(results: PathLike, hardware: Optional[str] = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(runs, curves) of one results folder: `manifest.tsv` + `runs/`. hardware: a label for every row
    (reference folders); None: each run's own 'this machine (...)'."""
    results = Path(results)
    manifest = pd.read_csv(results / "manifest.tsv", sep="\t", dtype={"seed": int})
    missing = set(MANIFEST_COLUMNS) - set(manifest.columns)
    if missing:
        raise ValueError(f"{results / 'manifest.tsv'} lacks columns {sorted(missing)}")
    rows, curves, cache = [], [], {}
    for role in manifest.to_dict("records"):
        run = role["run"]
        if run not in cache:
            log = read_log(results / "runs" / run)
            cache[run] = read_run(results / "runs" / run, log)
            if cache[run] is not None and len(log):
                curves.append(log.assign(run=run))
        rec = cache[run]
        # the role's labels win over same-named metrics keys (method: label vs engine method; status)
        rows.append({**(rec or {}), **role, "status": "done" if rec else "missing"})
    runs = pd.DataFrame(rows)
    names = runs.get("hardware_name", pd.Series(dtype=object)).dropna()
    label = hardware or (names.iloc[0] if len(names) else "this machine")
    runs.insert(0, "hardware", label)
    runs["pretrained_run"] = [pretrained_run(v) for v in runs.get("cfg.model.pretrained", [None] * len(runs))]
    curves = pd.concat(curves, ignore_index=True) if curves else pd.DataFrame(columns=["run", "event"])
    curves.insert(0, "hardware", label)
    return runs, curves


def reference_folders(reference: Optional[PathLike]) -> list[Path]:
    """<reference>/<hardware>/ folders that hold a manifest.tsv or bench CSVs, sorted by name."""
    if not reference or not Path(reference).is_dir():
        return []
    return sorted(p for p in Path(reference).iterdir()
                  if p.is_dir() and ((p / "manifest.tsv").is_file() or bench_files(p)))


def bench_files(folder: Path) -> list[Path]:
    """A reference folder's bench CSVs: `bench/` (eager PyTorch), `kernels/` (the adapter's kernels), `peers/` (QuadraNet
    V1 beside the high-order peers) and `runtime/` (exported models in deployment runtimes, `quadranet bench
    --runtime`)."""
    return [f for sub in ("bench", "kernels", "peers", "runtime") for f in sorted((folder / sub).glob("*.csv"))]


def collect(manifest: PathLike, bench: Iterable[PathLike] = (), reference: Optional[PathLike] = None):
    """(runs, curves, bench) DataFrames: this machine's results (the folder of `manifest`) and each
    reference folder's, stacked with a `hardware` column."""
    runs, curves = collect_results(Path(manifest).parent)
    local = runs["hardware"].iloc[0] if len(runs) else "this machine"
    benches = [read_bench(bench, local)]
    for folder in reference_folders(reference):
        if (folder / "manifest.tsv").is_file():
            r, c = collect_results(folder, hardware=folder.name)
            runs, curves = pd.concat([runs, r], ignore_index=True), pd.concat([curves, c], ignore_index=True)
        benches.append(read_bench(bench_files(folder), folder.name))
    return runs, curves, pd.concat(benches, ignore_index=True)


def write_collected(out_dir: PathLike, runs: pd.DataFrame, curves: pd.DataFrame, bench: pd.DataFrame) -> None:
    for name, df in (("runs", runs), ("curves", curves), ("bench", bench)):
        atomic.write_text(Path(out_dir) / f"{name}.csv", df.to_csv(index=False))


def load_collected(folder: PathLike) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(runs, curves, bench) as written by `write_collected` (empty files give empty frames)."""
    def read(name):
        path = Path(folder) / f"{name}.csv"
        try:
            return pd.read_csv(path, low_memory=False).copy()  # copy: one block per dtype, not per column
        except pd.errors.EmptyDataError:
            return pd.DataFrame()
    return read("runs"), read("curves"), read("bench")


ROLE = ["exp", "backbone", "method", "variant", "seed"]


def count_once(runs: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """(runs with each run counted once, a note per hardware label that lost runs). A run that appears under
    several hardware labels (one reference holding another's runs, or a rerun identical to the image) with the
    same role, config hash and result is kept only under the label holding the most runs (the superset); the
    others are shown as its reproduction, not as independent evidence."""
    if runs.empty or "config_hash" not in runs or runs["hardware"].nunique() < 2:
        return runs, []
    done = runs[runs["status"] == "done"]
    result = next((c for c in ("acc1", "box_ap") if c in done), None)
    key = [*ROLE, "config_hash"] + ([result] if result else [])
    size = done.groupby("hardware")["run"].nunique()
    ranked = done.assign(_size=done["hardware"].map(size)).sort_values(["_size", "hardware"],
                                                                        ascending=[False, True], kind="stable")
    dup = ranked.duplicated(key, keep="first") & ranked[key].notna().all(axis=1)
    drop = ranked[dup]
    if drop.empty:
        return runs, []
    kept = ranked[~dup].drop_duplicates(key).set_index(key)["hardware"]
    notes = []
    for hw, g in drop.groupby("hardware", sort=True):
        into = sorted(set(kept.loc[[tuple(r) for r in g[key].itertuples(index=False)]]))
        notes.append(f"{hw}: {g['run'].nunique()} of its {size[hw]} runs are also {', '.join(into)}'s, with the same "
                     f"config and the same {result or 'result'} (reproduced to the image): counted once, as "
                     f"{', '.join(into)}'s")
    return runs.drop(index=drop.index), notes
