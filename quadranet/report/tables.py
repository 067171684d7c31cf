"""The five tables, each written as CSV (full precision), Markdown and LaTeX (formatted, with provenance notes).

    table1_adaptation         E1: every backbone x setting x method: top-1 with intervals, quadratic share, cost,
                              savings of adaptation to the scratch target (paper table 1)
    table2_pretraining_scale  E2: accuracy and cost vs the size of the first-order pretraining set (paper's
                              larger-scale ImageNet-21K setting stands behind it)
    table3_coco               COCO detection / segmentation (paper table 3): box / mask AP
    table4_ablations          E4: rank, dilation, kernel, placement, frozen primary, stages
    table5_efficiency         E5: throughput and memory (`quadranet bench`)
Rows measured on other hardware (results/reference/<hardware>/) sit beside this machine's, labelled.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Callable, Optional

import pandas as pd

from .. import atomic
from .collect import count_once
from . import TABLES, TOLERANCE_PP
from .savings import CONVERGED_RULE, COST_RULE, method_times, savings
from .stats import INTERVAL_RULE, binomial_se, paired, t_interval

PM = "±"


def pm(mean, std, digits: int = 2) -> str:
    """'85.20 ± 0.40' ('85.20' for one seed, '' when missing)."""
    if mean is None or not math.isfinite(mean):
        return ""
    if std is None or not math.isfinite(std):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} {PM} {std:.{digits}f}"


def finished(runs: pd.DataFrame, exp: Optional[str] = None) -> pd.DataFrame:
    if runs.empty or "status" not in runs:
        return runs.iloc[0:0]
    r = runs[runs["status"] == "done"]
    return r[r["exp"] == exp] if exp else r


def summarise(runs: pd.DataFrame, keys: list, values: list) -> pd.DataFrame:
    """Mean, std (over seeds, ddof=0) and count of `values` per group `keys`."""
    g = runs.groupby(keys, sort=False, dropna=False)
    out = g[values].agg(["mean", "std"])
    out.columns = [f"{v}_{s}" for v, s in out.columns]
    for v in values:
        out[f"{v}_std"] = g[v].std(ddof=0)
    out["seeds"] = g.size()
    return out.reset_index()


def _col(df: pd.DataFrame, name: str, default=math.nan) -> pd.Series:
    return df[name] if name in df else pd.Series(default, index=df.index)


def energy_columns(r: pd.DataFrame) -> pd.DataFrame:
    """energy_wh / co2e_g of each run (NaN where it was not measured or estimated, as in runs made before energy was tracked) and
    energy_how: 'measured' or 'estimated' (the first word of its source label)."""
    how = _col(r, "energy_source", None).map(lambda s: s.split(":")[0] if isinstance(s, str) and ":" in s else "")
    return r.assign(energy_wh=1000 * _col(r, "energy_kwh"), co2e_g=1000 * _col(r, "co2e_kg"),
                    energy_how=how.where(how != "unavailable", ""))


def energy_label(r: pd.DataFrame, keys: list) -> list:
    """Per group of `keys`: how its energy was obtained ('estimated', 'measured', both joined; '' without)."""
    return [", ".join(sorted({v for v in g if v})) for _, g in r.groupby(keys, sort=False, dropna=False)["energy_how"]]


ENERGY_NOTE = ("energy (Wh) and CO2e (g): per run, of the whole process (start-up included), mean ± std over seeds; "
               "'estimated' = CodeCarbon's load-based model on a CPU without readable RAPL, 'measured' = NVML on a "
               "GPU or RAPL; CO2e = energy x the grid intensity of the run's train.carbon_intensity (metrics.json "
               "carries the label, wattages and intensity of each run). Empty where no run measured energy.")


# ---------------------------------------------------------------- writers
def to_markdown(df: pd.DataFrame) -> str:
    cells = [[str(c) for c in df.columns]] + [["" if pd.isna(v) else str(v) for v in row] for row in df.values]
    lines = ["| " + " | ".join(r).replace("\n", " ") + " |" for r in cells]
    lines.insert(1, "|" + "|".join(" --- " for _ in df.columns) + "|")
    return "\n".join(lines)


TEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "_": r"\_", "#": r"\#", "$": r"\$", "{": r"\{",
       "}": r"\}", "~": r"\textasciitilde{}", "^": r"\^{}", PM: r"$\pm$", "Δ": r"$\Delta$", "≥": r"$\geq$"}


def _tex_escape(s) -> str:
    return "".join(TEX.get(ch, ch) for ch in ("" if pd.isna(s) else str(s)))


def to_latex(df: pd.DataFrame, caption: str, label: str) -> str:
    rows = [" & ".join(_tex_escape(c) for c in df.columns) + r" \\ \midrule"]
    rows += [" & ".join(_tex_escape(v) for v in row) + r" \\" for row in df.values]
    return "\n".join([r"\begin{table}[t]", r"\centering\small", rf"\caption{{{_tex_escape(caption)}}}",
                      rf"\label{{tab:{label}}}", r"\begin{tabular}{" + "l" * len(df.columns) + "}", r"\toprule",
                      *rows, r"\bottomrule", r"\end{tabular}", r"\end{table}", ""])


def _sections(shown: pd.DataFrame) -> list[str]:
    """Markdown of `shown`, one table per hardware under its own heading when it has a hardware column."""
    if not len(shown):
        return ["_No rows: nothing run for this table yet._", ""]
    if "hardware" not in shown:
        return [to_markdown(shown), ""]
    out = []
    for hw, g in shown.groupby("hardware", sort=False):
        out += [f"## {hw}", "", to_markdown(g.drop(columns="hardware")), ""]
    return out


def write_table(out_dir, name: str, data: pd.DataFrame, shown: pd.DataFrame, title: str, notes: list) -> None:
    """name.csv (`data`, full precision), name.md (`shown` per hardware, formatted, with `notes`) and name.tex."""
    out_dir = Path(out_dir)
    atomic.write_text(out_dir / f"{name}.csv", data.to_csv(index=False))
    md = [f"# {title}", "", *_sections(shown)]
    md += [f"- {n}" for n in notes]
    atomic.write_text(out_dir / f"{name}.md", "\n".join(md) + "\n")
    atomic.write_text(out_dir / f"{name}.tex", to_latex(shown, title + ". " + " ".join(notes), name))


def provenance_note(runs: pd.DataFrame) -> str:
    if runs.empty:
        return "No finished runs."
    commits = sorted({str(c)[:10] for c in _col(runs, "provenance.git_commit").dropna()})
    dirty = bool(_col(runs, "provenance.git_dirty", False).fillna(False).astype(bool).any())
    return (f"{len(runs)} finished runs; hardware: {', '.join(sorted(runs['hardware'].unique()))}; "
            f"git commit(s): {', '.join(commits) or 'unknown'}{' (uncommitted changes)' if dirty else ''}; "
            f"per-run command, config hash, versions, date and seed: results/collected/runs.csv.")


# ---------------------------------------------------------------- tables
def _fmt(v, spec: str = ".2f", suffix: str = "") -> str:
    return "" if v is None or pd.isna(v) else f"{v:{spec}}{suffix}"


def _share(start, end) -> str:
    """'0.050 (0.000→0.050)': the quadratic branch's RMS share of the layer output at the end (start→end)."""
    return "" if pd.isna(end) else f"{end:.3f} ({_fmt(start, '.3f')}→{end:.3f})"


def _ci(mean, lo, hi, n, scale: float = 1.0, spec: str = "+.2f", suffix: str = "") -> str:
    """'92.5% [90.1, 94.9] (n=3)' ('... (n=1)' without an interval)."""
    if pd.isna(mean):
        return ""
    m = f"{scale * mean:{spec}}{suffix}"
    return f"{m} (n={n:.0f})" if pd.isna(lo) else f"{m} [{scale * lo:{spec}}, {scale * hi:{spec}}] (n={n:.0f})"


def share_columns(r: pd.DataFrame) -> pd.DataFrame:
    """qs_start / qs_end: median quadratic share at the start and end (NaN without quadratic terms or in old runs)."""
    return r.assign(qs_start=_col(r, "quadratic_share.start.median"), qs_end=_col(r, "quadratic_share.end.median"))


METHOD_NOTE = ("Methods: scratch = quadratic (QuadraNet V2 structure) from random init; v1_scratch = QuadraNet V1 from "
               "random init; fo_scratch = first-order from random init; adapt = V2 adaptation of the pretrained "
               "first-order weights (quadratic terms + head, then everything); finetune = first-order finetune; "
               "lora = linear low-rank adapter at the quadratic adapter's parameter count; head = only the "
               "classifier head trains (control). Settings: intask = first-order weights pretrained on the target "
               "task itself (the fo_scratch run of the same seed); transfer = pretrained on another task, new head.")


def savings_notes(tolerance_pp: float) -> list:
    return [f"Target: mean final top-1 of the scratch runs minus {tolerance_pp:g} pp; {COST_RULE}; the evaluation "
            "before training never counts. to target: mean over the seeds that reach it (reached / seeds; a seed "
            "that never reaches it is left out of the mean and of the paired savings, and counted). savings to "
            "target = 1 - mean t_method / mean t_scratch, with the interval of the paired per-seed savings "
            f"({INTERVAL_RULE}); the secondary savings counting evaluation are in the CSV. A start at or above the "
            "target means the savings say nothing about training. The time to target lies between the evaluation "
            "that reaches it and the one before (the bracket in the CSV and claims.md).",
            f"{CONVERGED_RULE}."]


def _mt_cols(s: pd.DataFrame, mt: pd.DataFrame, keys: list) -> pd.DataFrame:
    """`s` with each method's time to the scratch target and savings (savings.method_times) merged in."""
    if mt.empty:
        return s
    cols = ["target_acc1", "reached", "t_s", "t_before_s", "savings_to_target", "savings_seed_mean", "savings_lo",
            "savings_hi", "savings_seed_n"]
    return s.merge(mt[[*keys, *cols]].rename(columns={c: f"tt_{c}" for c in cols}), on=keys, how="left")


def _to_target(reached, seeds, t) -> str:
    """'14.2 (3/3)': mean training device-seconds to the target over the seeds that reach it (reached / seeds)."""
    if pd.isna(reached):
        return ""
    return f"{_fmt(t, '.1f') or 'never'} ({reached:.0f}/{seeds:.0f})"


def budget_text(g: pd.DataFrame) -> str:
    """How closely LoRA's added parameters match the quadratic adapter's in runs `g`: 'LoRA adds 31,600
    parameters, the quadratic adapter 31,008 (+1.9%)' ('' without both)."""
    added = g.groupby("method")["params_added"].mean() if "params_added" in g else pd.Series(dtype=float)
    if not {"adapt", "lora"} <= set(added.index) or not added["adapt"]:
        return ""
    return (f"LoRA adds {added['lora']:,.0f} parameters, the quadratic adapter {added['adapt']:,.0f} "
            f"({100 * (added['lora'] / added['adapt'] - 1):+.1f}%)")


def table1_adaptation(runs, curves, bench, tolerance_pp: float = TOLERANCE_PP):
    r = finished(runs, "e1")
    if r.empty:
        return r, r, ["E1 not run (e1.enabled false, or no run finished)."]
    keys = ["hardware", "backbone", "variant", "method"]
    r = energy_columns(share_columns(r)).assign(
        trainable_m=r["trainable_params"] / 1e6, params_m=r["params"] / 1e6, steps=_col(r, "steps"),
        eval_images=_col(r, "eval_images"), train_s=_col(r, "train_s"), eval_s=_col(r, "eval_s"),
        data_wait_s=_col(r, "data_wait_s"), params_added=_col(r, "params_added"))
    s = summarise(r, keys, ["acc1", "initial_acc1", "cost_s", "train_s", "eval_s", "data_wait_s", "trainable_m",
                            "params_m", "params_added", "steps", "eval_images", "qs_start", "qs_end", "energy_wh",
                            "co2e_g"])
    s["energy_how"] = energy_label(r, keys)
    s["acc1_half"] = r.groupby(keys, sort=False, dropna=False)["acc1"].apply(lambda v: t_interval(v)["half"]).values
    s["acc1_binomial_se"] = [binomial_se(a, n) for a, n in zip(s["acc1_mean"], s["eval_images_mean"])]
    sv = savings(runs, curves, tolerance_pp)
    sv = sv[sv["exp"] == "e1"].drop(columns="exp") if len(sv) else sv
    if len(sv):
        s = s.merge(sv.drop(columns="seeds").assign(method="adapt"), on=keys, how="left")
    s = _mt_cols(s, method_times(r, curves, tolerance_pp), keys)
    diffs = []  # every method against scratch, paired by seed
    for m in s["method"].unique():
        d = paired(r, "acc1", m, "scratch", keys[:3]) if m != "scratch" else pd.DataFrame()
        if len(d):
            diffs.append(d.drop(columns="diffs").assign(method=m))
    if diffs:
        d = pd.concat(diffs)
        s = s.merge(d.rename(columns={c: f"vs_scratch_{c}" for c in d.columns if c not in keys}), on=keys, how="left")
    shown = pd.DataFrame({
        "hardware": s["hardware"], "backbone": s["backbone"], "setting": s["variant"], "method": s["method"],
        "seeds": s["seeds"],
        "top-1 (%) ± 95% t": [pm(m, h) for m, h in zip(s["acc1_mean"], s["acc1_half"])],
        "vs scratch (pp)": [_ci(m, lo, hi, n) for m, lo, hi, n in zip(
            _col(s, "vs_scratch_mean"), _col(s, "vs_scratch_lo"), _col(s, "vs_scratch_hi"), _col(s, "vs_scratch_n"))],
        "start (%)": s["initial_acc1_mean"].map(_fmt),
        "quadratic share": s["qs_end_mean"].map(lambda v: _fmt(v, ".3f")),
        "train (device-s)": s["train_s_mean"].map(lambda v: _fmt(v, ".1f")),
        "eval / data wait (device-s)": [f"{_fmt(e, '.1f')} / {_fmt(w, '.2f') or 'n/a'}" if pd.notna(e) else ""
                                        for e, w in zip(s["eval_s_mean"], s["data_wait_s_mean"])],
        "to target (train-s, reached)": [_to_target(n, k, t) for n, k, t in zip(
            _col(s, "tt_reached"), s["seeds"], _col(s, "tt_t_s"))],
        "savings to target (%)": [_ci(m, lo, hi, n, 100, ".1f") if pd.notna(m) else _fmt(100 * v, ".1f")
                                  for v, m, lo, hi, n in zip(_col(s, "tt_savings_to_target"),
                                                             _col(s, "tt_savings_seed_mean"), _col(s, "tt_savings_lo"),
                                                             _col(s, "tt_savings_hi"), _col(s, "tt_savings_seed_n"))],
    })
    shown.loc[s["method"].eq("scratch").to_numpy(), "savings to target (%)"] = ""
    targets = s.dropna(subset=["tt_target_acc1"]).drop_duplicates(keys[:3]) if "tt_target_acc1" in s else s.iloc[0:0]
    notes = [METHOD_NOTE,
             "top-1: mean ± half-width of the " + INTERVAL_RULE + " over seeds; vs scratch: the method's top-1 minus "
             "scratch's, paired by seed, same interval. start: top-1 before training. quadratic share: median over "
             "adapted layers of RMS(quadratic or LoRA branch output) / RMS(primary output) at the end.",
             "train: device-seconds of training (data loading inside), the cost as the paper counts GPU-hours; "
             "eval: the evaluations after the first optimizer step, timed apart; data wait: seconds the training "
             "steps waited for their batch (inside train: where it is large, device-hours measure the input "
             "pipeline, not the model). Mean over seeds.",
             *savings_notes(tolerance_pp),
             *[f"{bb} [{hw}]: {text}" for (hw, bb), g in r.groupby(["hardware", "backbone"], sort=False)
               if (text := budget_text(g))],
             "Targets: " + "; ".join(f"{t.backbone} {t.variant} [{t.hardware}] {t.tt_target_acc1:.2f}%"
                                     for t in targets.itertuples()) + ".",
             "The CSV holds every column: parameters, steps, binomial SE, energy and CO2e (" + ENERGY_NOTE + "), the "
             "evaluation bracket, savings counting evaluation, over the full schedule, vs first-order scratch and "
             "incl. pretraining; claims.md explains each C1 row.",
             provenance_note(r)]
    return s, shown, notes


def table2_pretraining_scale(runs, curves, bench, tolerance_pp: float = TOLERANCE_PP):
    r = finished(runs, "e2")
    if r.empty:
        return r, r, ["E2 not run (e2.enabled false, or no run finished)."]
    pre = finished(runs).drop_duplicates(["hardware", "run"]).set_index(["hardware", "run"])

    def of_pretraining(column):  # the value of the run each row starts from (0 without one)
        col = _col(pre, column)
        return [col.get((h, p), math.nan) if isinstance(p, str) else 0.0
                for h, p in zip(r["hardware"], r["pretrained_run"])]

    r = energy_columns(r.assign(pretrain_s=of_pretraining("train_s"), source_images=of_pretraining("train_images"),
                                train_s=_col(r, "train_s")))
    s = summarise(r, ["hardware", "backbone", "method", "variant"],
                  ["acc1", "train_s", "pretrain_s", "source_images", "energy_wh", "co2e_g"])
    s["energy_how"] = energy_label(r, ["hardware", "backbone", "method", "variant"])
    rows = []
    for (hw, bb, source), g in r.groupby(["hardware", "backbone", "variant"], sort=False):  # E2: source size
        if source == "none":
            continue
        sub = pd.concat([g, r[(r["hardware"] == hw) & (r["backbone"] == bb) & (r["variant"] == "none")]])
        sv = savings(sub, curves, tolerance_pp, by=("hardware", "backbone"))
        rows.append({"hardware": hw, "backbone": bb, "variant": source, **({k: sv.iloc[0][k] for k in (
            "target_acc1", "savings_to_target", "savings_lo", "savings_hi", "savings_seed_mean", "savings_seed_n",
            "savings_incl_pretraining")} if len(sv) else {})})
    if rows:
        s = s.merge(pd.DataFrame(rows), on=["hardware", "backbone", "variant"], how="left")
    shown = pd.DataFrame({
        "hardware": s["hardware"], "backbone": s["backbone"], "method": s["method"],
        "pretraining set (images)": s["source_images_mean"].map(lambda v: "none" if not v or pd.isna(v) else f"{v:.0f}"),
        "pretraining (device-s)": s["pretrain_s_mean"].map(lambda v: "" if pd.isna(v) or not v else f"{v:.0f}"),
        "seeds": s["seeds"], "top-1 (%)": [pm(m, d) for m, d in zip(s["acc1_mean"], s["acc1_std"])],
        "train (device-s)": [pm(m, d, 1) for m, d in zip(s["train_s_mean"], s["train_s_std"])],
        "energy (Wh)": [pm(m, d, 3) for m, d in zip(s["energy_wh_mean"], s["energy_wh_std"])],
        "CO2e (g)": s["co2e_g_mean"].map(lambda v: _fmt(v, ".3f")), "energy is": s["energy_how"],
        "target (%)": _col(s, "target_acc1").map(_fmt),
        "savings to target": _col(s, "savings_to_target").map(lambda v: _fmt(100 * v, ".1f", "%")),
        "per seed [95% CI] (%)": [_ci(m, lo, hi, n, 100, ".1f") for m, lo, hi, n in zip(
            _col(s, "savings_seed_mean"), _col(s, "savings_lo"), _col(s, "savings_hi"), _col(s, "savings_seed_n"))],
        "incl. pretraining": _col(s, "savings_incl_pretraining").map(lambda v: _fmt(100 * v, ".1f", "%")),
    })
    notes = ["First-order pretraining on growing source sets, then V2 adaptation on the target task; rows "
             "without pretraining are the from-scratch references. The paper's larger-scale setting is "
             "ImageNet-21K pretraining (its table 2; numbers not public to us).",
             "savings: as in table 1 (one definition, quadranet/report/savings.py), against the scratch rows of "
             "the same backbone.", *savings_notes(tolerance_pp), ENERGY_NOTE, provenance_note(r)]
    return s, shown, notes


def table3_coco(runs, curves, bench, **_):
    r = finished(runs, "coco")
    if r.empty:
        return r, pd.DataFrame({"status": ["not run: COCO detection is off (workflow config coco.enabled: false)"]}), [
            "Paper table 3 (MS COCO detection and instance segmentation): numbers not public to us."]
    keys = ["hardware", "backbone", "variant", "method"]
    values = [v for v in ("box_ap", "mask_ap", "initial_box_ap", "train_s") if v in r]
    r = r.assign(**{v: 100 * r[v] for v in ("box_ap", "mask_ap", "initial_box_ap") if v in r})  # COCOeval's [0, 1]
    s = summarise(r, keys, values)
    diffs = [paired(r, "box_ap", "adapt", m, keys[:3]) for m in ("scratch", "finetune")] if "box_ap" in r else []
    diffs = [d.drop(columns="diffs").assign(method=m) for d, m in zip(diffs, ("scratch", "finetune")) if len(d)]
    if diffs:  # adapt minus each other method, shown on that method's row
        d = pd.concat(diffs)
        s = s.merge(d.rename(columns={c: f"adapt_minus_{c}" for c in d.columns if c not in keys}), on=keys, how="left")
    shown = s[["hardware", "backbone", "variant", "method", "seeds"]].rename(columns={"variant": "schedule"})
    names = {"box_ap": "box AP", "mask_ap": "mask AP", "initial_box_ap": "start box AP",
             "train_s": "train (device-s)"}
    for v in values:
        shown[names[v]] = [pm(m, d) for m, d in zip(s[f"{v}_mean"], s[f"{v}_std"])]
    shown["adapt - this (box AP)"] = [_ci(m, lo, hi, n) for m, lo, hi, n in zip(
        _col(s, "adapt_minus_mean"), _col(s, "adapt_minus_lo"), _col(s, "adapt_minus_hi"), _col(s, "adapt_minus_n"))]
    return s, shown, ["box / mask AP: COCO mAP@[.5:.95] (x100) of `quadranet detect train`, mean ± std over seeds; "
                      f"adapt - this: paired by seed, {INTERVAL_RULE}. train: training device-seconds.",
                      provenance_note(r)]


def _stages(text) -> str:
    try:
        stages = json.loads(text) if isinstance(text, str) else []
    except ValueError:
        return str(text)
    return " then ".join(f"{s.get('epochs')} ep [{'+'.join(s.get('trainable', []))}]" for s in stages) or "default"


def table4_ablations(runs, curves, bench, **_):
    r = finished(runs, "e4")
    if r.empty:
        return r, r, ["E4 not run (e4.enabled false, or no run finished)."]
    keys = ["cfg.adapter.rank", "cfg.adapter.dilation", "cfg.adapter.kernel", "cfg.adapter.targets", "cfg.train.stages"]
    r = share_columns(r).assign(train_s=_col(r, "train_s"), **{k: _col(r, k, "").astype(str) for k in keys})
    s = summarise(r, ["hardware", "backbone", "variant", *keys],
                  ["acc1", "train_s", "params_added", "trainable_params", "qs_start", "qs_end"])
    base = s[s["variant"] == "base"].set_index("hardware")["acc1_mean"]
    s["delta_vs_base"] = s["acc1_mean"] - s["hardware"].map(base)
    shown = pd.DataFrame({
        "hardware": s["hardware"], "backbone": s["backbone"], "variant": s["variant"],
        "rank": s["cfg.adapter.rank"], "dilation": s["cfg.adapter.dilation"], "kernel": s["cfg.adapter.kernel"],
        "targets": s["cfg.adapter.targets"].str.replace(r'[\[\]"]', "", regex=True),
        "stages": s["cfg.train.stages"].map(_stages),
        "added params (K)": (s["params_added_mean"] / 1e3).map("{:.1f}".format),
        "trainable (K)": (s["trainable_params_mean"] / 1e3).map("{:.1f}".format), "seeds": s["seeds"],
        "top-1 (%)": [pm(m, d) for m, d in zip(s["acc1_mean"], s["acc1_std"])],
        "Δ vs base (pp)": s["delta_vs_base"].map(lambda v: "" if pd.isna(v) else f"{v:+.2f}"),
        "quadratic share": [_share(a, b) for a, b in zip(s["qs_start_mean"], s["qs_end_mean"])],
        "train (device-s)": [pm(m, d, 1) for m, d in zip(s["train_s_mean"], s["train_s_std"])],
    })
    return s, shown, ["Each variant changes one setting of the base V2 adaptation (row 'base').",
                      "quadratic share: as in table 1 (median RMS ratio of the quadratic branch to the primary "
                      "output, end (start→end)).", provenance_note(r)]


def table5_efficiency(runs, curves, bench, **_):
    if bench.empty:
        return bench, bench, ["E5 not run (e5.enabled false)."]
    cols = [c for c in ("hardware", "source", "model", "variant", "runtime", "mode", "batch", "input_size", "device",
                        "images_per_s", "step_ms", "joules_per_image", "peak_mem_mb", "saved_for_backward_mb",
                        "params", "trainable_params", "ratio_vs_first_order") if c in bench]
    shown = bench[cols].copy()
    for c in ("images_per_s", "step_ms", "joules_per_image", "peak_mem_mb", "saved_for_backward_mb",
              "ratio_vs_first_order"):
        if c in shown:
            shown[c] = shown[c].map(lambda v: "" if pd.isna(v) else f"{v:.3g}" if abs(v) < 100 else f"{v:.0f}")
    notes = ["`quadranet bench`: every ratio compares rows of one CSV, measured in one process on one device "
             "with the same layout and precision; source 'layer' = one quadratic product, plain vs "
             "memory-efficient backward (saved_for_backward_mb: what autograd keeps).",
             "Hardware: " + ", ".join(sorted(bench["hardware"].unique())) + "."]
    if "energy_source" in bench:
        labels = sorted({str(v).split(" (")[0] for v in bench["energy_source"].dropna()})
        notes.append("joules_per_image: energy per image over the timed steps; " + ("; ".join(labels) or "none")
                     + ". On the CPU the variants take turns, so each row's energy is the process's mean power "
                       "times its step time (energy ratios there equal time ratios); on a GPU each variant is "
                       "read from the board's counter alone.")
    else:
        notes.append("joules_per_image: not measured by these bench CSVs (written before the bench measured "
                     "energy).")
    return bench, shown, notes


BUILDERS: dict[str, tuple[Callable, str]] = {
    "table1_adaptation": (table1_adaptation, "Table 1. Quadratic adaptation (V2) vs training from scratch, across backbones"),
    "table2_pretraining_scale": (table2_pretraining_scale, "Table 2. Accuracy and cost vs the scale of first-order pretraining"),
    "table3_coco": (table3_coco, "Table 3. COCO detection and instance segmentation"),
    "table4_ablations": (table4_ablations, "Table 4. Ablations of the quadratic adapter and its training"),
    "table5_efficiency": (table5_efficiency, "Table 5. Efficiency: throughput and memory"),
}
assert tuple(BUILDERS) == TABLES


def write_tables(runs: pd.DataFrame, curves: pd.DataFrame, bench: pd.DataFrame, out_dir,
                 tolerance_pp: float = TOLERANCE_PP) -> list[str]:
    """Write every table into out_dir (savings targets at `tolerance_pp`); returns their names. Each run counts
    once (`count_once`)."""
    runs, reproduced = count_once(runs)
    for name, (build, title) in BUILDERS.items():
        data, shown, notes = build(runs, curves, bench, tolerance_pp=tolerance_pp)
        write_table(out_dir, name, data, shown, title, notes + [f"Counted once: {n}." for n in reproduced])
    return list(BUILDERS)
