"""The run registry: every run a workflow config asks for, under its run id, and the role of each in the experiments.

A training run is one entry of `Registry.runs`: a run id "<exp>/<backbone>/<method>/<variant>/seed<seed>" mapped
to its complete `quadranet train` config. Its folder is results/runs/<run id>/ (`RUNS_DIR`). Experiments that need
an identical run share it (the same config gets the first id it was registered under), so e.g. E2's adaptation
from the default source set is E1's run, computed once. `detect_runs` are the `quadranet detect train` runs
(COCO). `manifest` lists every (experiment, run) role, one row of MANIFEST_COLUMNS each, in the order the
experiments register them; the report reads runs through it (results/manifest.tsv).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Optional

RUNS_DIR = "results/runs"  # run folders, relative to the workflow's working directory
MANIFEST_COLUMNS = ["exp", "backbone", "method", "variant", "seed", "run"]


@dataclass
class Registry:
    """Runs by id and their manifest rows. check_files: also require each run's data, and its weights file
    unless a run of the registry makes it, to exist now (off to plan runs before their data is on disk)."""
    check_files: bool = True
    runs: dict = field(default_factory=dict)  # run id -> `quadranet train` config
    detect_runs: dict = field(default_factory=dict)  # run id -> `quadranet detect train` config
    manifest: list = field(default_factory=list)  # rows (dicts of MANIFEST_COLUMNS)

    def add(self, exp: str, backbone: str, method: str, variant: str, seed: int, cfg: dict,
            detection: bool = False) -> str:
        """Register run config `cfg` in role (exp, backbone, method, variant, seed); returns its run id: the id of
        an identical config registered before (by any experiment), else a new one."""
        table = self.detect_runs if detection else self.runs
        rid = next((r for r, c in table.items() if c == cfg), None)
        if rid is None:
            rid = f"{exp}/{backbone}/{method}/{variant}/seed{seed}"
            if rid in table:
                raise ValueError(f"run id {rid} registered twice with different configs")
            check_run(rid, cfg, detection, self.check_files)
            table[rid] = cfg
        row = dict(zip(MANIFEST_COLUMNS, (exp, backbone, method, variant, seed, rid)))
        if row not in self.manifest:
            self.manifest.append(row)
        return rid

    def config(self, rid: str) -> dict:
        """The config of run `rid`, training or detection."""
        return self.runs[rid] if rid in self.runs else self.detect_runs[rid]

    def starts_from(self, rid: str) -> Optional[str]:
        """The id of the run whose model run `rid` starts from (its model.pretrained is that run's folder); None when
        it starts from anything else, or when the registry has no run `rid`."""
        cfg = self.runs.get(rid, self.detect_runs.get(rid, {}))
        weights = cfg.get("model", {}).get("pretrained", "")
        return weights.removeprefix(f"{RUNS_DIR}/") if weights.startswith(f"{RUNS_DIR}/") else None


def run_dir(rid: str) -> str:
    return f"{RUNS_DIR}/{rid}"


def check_run(rid: str, cfg: dict, detection: bool, check_files: bool) -> None:
    """Refuse, naming the run, a config quadranet would refuse; with `check_files`, also data that is not where the
    config says and a weights file that does not exist: at registration, not when the run's job starts."""
    from ..config import ConfigError

    if detection:
        from ..detection import config as task_config, data as task_data
    else:
        from ..classify import config as task_config, data as task_data
    try:
        parsed = task_config.load_config(base=cfg)
        if check_files:
            task_data.check_data(parsed)
    except (ConfigError, FileNotFoundError, ValueError) as e:
        raise ValueError(f"run {rid}: {e}") from None
    if not check_files:
        return
    weights = parsed.model.pretrained
    made_here = weights.startswith(f"{RUNS_DIR}/")  # a run of the registry, made before this run starts
    if weights not in ("none", "offline", "timm") and not made_here and not os.path.exists(weights):
        raise ValueError(f"run {rid}: model.pretrained={weights!r} does not exist; expected 'none', 'offline', "
                         f"a run folder or a .safetensors file (set weights.<backbone> in the config)")

