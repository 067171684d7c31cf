"""The five tables, each written as CSV (full precision), Markdown and LaTeX (formatted, with provenance notes).

    table1_adaptation         E1: every backbone x method: top-1, cost, savings of adaptation (paper table 1)
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

from .. import io
from . import TABLES
from .savings import describe, savings

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


def versus(runs: pd.DataFrame, exp: str, value: str, a: str = "adapt", b: str = "scratch", by=("hardware", "backbone")):
    """Per group: mean/std of `value` for methods a and b, their difference and whether it exceeds the spread."""
    r = finished(runs, exp)
    if r.empty or value not in r:
        return pd.DataFrame()
    s = r[r["method"].isin([a, b])].groupby([*by, "method"])[value].agg(["mean", lambda v: v.std(ddof=0), "size"])
    s.columns = ["mean", "std", "n"]
    s = s.unstack("method").dropna()
    if s.empty or a not in s["mean"] or b not in s["mean"]:
        return pd.DataFrame()
    out = pd.DataFrame({"a": s["mean"][a], "a_std": s["std"][a], "b": s["mean"][b], "b_std": s["std"][b],
                        "n": s["n"][a].astype(int)})
    out["diff"] = out["a"] - out["b"]
    out["beyond_spread"] = out["diff"].abs() > out["a_std"] + out["b_std"]
    return out.reset_index()


def _col(df: pd.DataFrame, name: str, default=math.nan) -> pd.Series:
    return df[name] if name in df else pd.Series(default, index=df.index)


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


def write_table(out_dir, name: str, data: pd.DataFrame, shown: pd.DataFrame, title: str, notes: list) -> None:
    """name.csv (`data`, full precision), name.md and name.tex (`shown`, formatted, with `notes`)."""
    out_dir = Path(out_dir)
    io.write_text(out_dir / f"{name}.csv", data.to_csv(index=False))
    md = [f"# {title}", "", to_markdown(shown) if len(shown) else "_No rows: nothing run for this table yet._", ""]
    md += [f"- {n}" for n in notes]
    io.write_text(out_dir / f"{name}.md", "\n".join(md) + "\n")
    io.write_text(out_dir / f"{name}.tex", to_latex(shown, title + ". " + " ".join(notes), name))


def provenance_note(runs: pd.DataFrame) -> str:
    if runs.empty:
        return "No finished runs."
    commits = sorted({str(c)[:10] for c in _col(runs, "provenance.git_commit").dropna()})
    dirty = bool(_col(runs, "provenance.git_dirty", False).fillna(False).astype(bool).any())
    return (f"{len(runs)} finished runs; hardware: {', '.join(sorted(runs['hardware'].unique()))}; "
            f"git commit(s): {', '.join(commits) or 'unknown'}{' (uncommitted changes)' if dirty else ''}; "
            f"per-run command, config hash, versions, date and seed: results/collected/runs.csv.")


# ---------------------------------------------------------------- tables
def table1_adaptation(runs, curves, bench):
    r = finished(runs, "e1")
    if r.empty:
        return r, r, ["E1 not run (e1.enabled false, or no run finished)."]
    r = r.assign(trainable_m=r["trainable_params"] / 1e6, params_m=r["params"] / 1e6)
    r = r.assign(steps=_col(r, "steps"))
    s = summarise(r, ["hardware", "backbone", "method"],
                  ["acc1", "initial_acc1", "cost_s", "trainable_m", "params_m", "steps"])
    sv = savings(runs, curves, by=("hardware", "exp", "backbone"))
    sv = sv[sv["exp"] == "e1"] if len(sv) else sv
    if len(sv):
        s = s.merge(sv.assign(method="adapt")[["hardware", "backbone", "method", "target_acc1", "savings",
                                               "savings_seed_std", "pretrain_s", "savings_incl_pretraining"]],
                    on=["hardware", "backbone", "method"], how="left")
    shown = pd.DataFrame({
        "hardware": s["hardware"], "backbone": s["backbone"], "params (M)": s["params_m_mean"].map("{:.2f}".format),
        "method": s["method"], "seeds": s["seeds"],
        "steps": s["steps_mean"].map(lambda v: "" if pd.isna(v) else f"{v:g}"),
        "top-1 (%)": [pm(m, d) for m, d in zip(s["acc1_mean"], s["acc1_std"])],
        "start top-1 (%)": s["initial_acc1_mean"].map(lambda v: "" if pd.isna(v) else f"{v:.2f}"),
        "trainable (M)": s["trainable_m_mean"].map("{:.3f}".format),
        "cost (device-s)": [pm(m, d, 1) for m, d in zip(s["cost_s_mean"], s["cost_s_std"])],
        "savings vs scratch": [f"{100 * v:.1f}% @ {t:.2f}%" if pd.notna(v) else "" for v, t in
                               zip(_col(s, "savings"), _col(s, "target_acc1"))],
        "incl. pretraining": [f"{100 * v:.1f}%" if pd.notna(v) else "" for v in _col(s, "savings_incl_pretraining")],
    })
    notes = ["Methods: scratch = quadratic (QuadraNet V2 structure) from random init; adapt = V2 adaptation of the "
             "pretrained first-order weights; finetune = first-order finetune; fo_scratch = first-order from random "
             "init; lora = LoRA adapter at the quadratic adapter's parameter count.",
             "cost = device-seconds of training + evaluation (start-up apart); mean ± std over seeds. steps = "
             "optimizer steps, all stages together.",
             *[f"{row['hardware']} / {row['backbone']}: {describe(row)}." for _, row in sv.iterrows()],
             *[f"{v.hardware} / {v.backbone}: adapt - scratch top-1 = {v.diff:+.2f} pp, "
               f"{'beyond' if v.beyond_spread else 'within'} the seed spread (± {v.a_std:.2f} and ± {v.b_std:.2f}, "
               f"{v.n} seeds)." for v in versus(runs, "e1", "acc1").itertuples()],
             provenance_note(r)]
    return s, shown, notes


def table2_pretraining_scale(runs, curves, bench):
    r = finished(runs, "e2")
    if r.empty:
        return r, r, ["E2 not run (e2.enabled false, or no run finished)."]
    pre = finished(runs).drop_duplicates(["hardware", "run"]).set_index(["hardware", "run"])

    def of_pretraining(column):  # the value of the run each row starts from (0 without one)
        col = _col(pre, column)
        return [col.get((h, p), math.nan) if isinstance(p, str) else 0.0
                for h, p in zip(r["hardware"], r["pretrained_run"])]

    r = r.assign(pretrain_s=of_pretraining("cost_s"), source_images=of_pretraining("train_images"))
    s = summarise(r, ["hardware", "backbone", "method", "variant"], ["acc1", "cost_s", "pretrain_s", "source_images"])
    rows = []
    for (hw, bb, variant), g in r.groupby(["hardware", "backbone", "variant"], sort=False):
        if variant == "none":
            continue
        sub = pd.concat([g, r[(r["hardware"] == hw) & (r["backbone"] == bb) & (r["variant"] == "none")]])
        sv = savings(sub.assign(exp="e2"), curves, by=("hardware", "backbone"))
        rows.append({"hardware": hw, "backbone": bb, "variant": variant,
                     **({k: sv.iloc[0][k] for k in ("target_acc1", "savings", "savings_incl_pretraining")} if len(sv) else {})})
    if rows:
        s = s.merge(pd.DataFrame(rows), on=["hardware", "backbone", "variant"], how="left")
    shown = pd.DataFrame({
        "hardware": s["hardware"], "backbone": s["backbone"], "method": s["method"],
        "pretraining set (images)": s["source_images_mean"].map(lambda v: "none" if not v or pd.isna(v) else f"{v:.0f}"),
        "pretraining (device-s)": s["pretrain_s_mean"].map(lambda v: "" if pd.isna(v) or not v else f"{v:.0f}"),
        "seeds": s["seeds"], "top-1 (%)": [pm(m, d) for m, d in zip(s["acc1_mean"], s["acc1_std"])],
        "cost (device-s)": [pm(m, d, 1) for m, d in zip(s["cost_s_mean"], s["cost_s_std"])],
        "savings vs scratch": [f"{100 * v:.1f}% @ {t:.2f}%" if pd.notna(v) else "" for v, t in
                               zip(_col(s, "savings"), _col(s, "target_acc1"))],
        "incl. pretraining": [f"{100 * v:.1f}%" if pd.notna(v) else "" for v in _col(s, "savings_incl_pretraining")],
    })
    notes = ["First-order pretraining on growing source sets, then V2 adaptation on the target task; rows "
             "without pretraining are the from-scratch references. The paper's larger-scale setting is "
             "ImageNet-21K pretraining (its table 2; numbers not public to us).",
             "savings: as in table 1, target per row (highest accuracy every adapt and scratch seed reaches).",
             provenance_note(r)]
    return s, shown, notes


def table3_coco(runs, curves, bench):
    r = finished(runs, "coco")
    if r.empty:
        return r, pd.DataFrame({"status": ["not run: COCO detection is off (workflow config coco.enabled: false)"]}), [
            "Paper table 3 (MS COCO detection and instance segmentation): numbers not public to us."]
    values = [v for v in ("box_ap", "mask_ap", "cost_s") if v in r]
    r = r.assign(**{v: 100 * r[v] for v in ("box_ap", "mask_ap") if v in r})  # COCOeval's [0, 1] -> AP points
    s = summarise(r, ["hardware", "backbone", "variant", "method"], values)
    shown = s[["hardware", "backbone", "variant", "method", "seeds"]].rename(columns={"variant": "schedule"})
    names = {"box_ap": "box AP", "mask_ap": "mask AP", "cost_s": "cost (device-s)"}
    for v in values:
        shown[names[v]] = [pm(m, d) for m, d in zip(s[f"{v}_mean"], s[f"{v}_std"])]
    return s, shown, ["box / mask AP: COCO mAP@[.5:.95] (x100) of `quadranet detect train`.", provenance_note(r)]


def _stages(text) -> str:
    try:
        stages = json.loads(text) if isinstance(text, str) else []
    except ValueError:
        return str(text)
    return " then ".join(f"{s.get('epochs')} ep [{'+'.join(s.get('trainable', []))}]" for s in stages) or "default"


def table4_ablations(runs, curves, bench):
    r = finished(runs, "e4")
    if r.empty:
        return r, r, ["E4 not run (e4.enabled false, or no run finished)."]
    keys = ["cfg.adapter.rank", "cfg.adapter.dilation", "cfg.adapter.kernel", "cfg.adapter.targets", "cfg.train.stages"]
    r = r.assign(**{k: _col(r, k, "").astype(str) for k in keys})
    s = summarise(r, ["hardware", "backbone", "variant", *keys], ["acc1", "cost_s", "params_added", "trainable_params"])
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
        "cost (device-s)": [pm(m, d, 1) for m, d in zip(s["cost_s_mean"], s["cost_s_std"])],
    })
    return s, shown, ["Each variant changes one setting of the base V2 adaptation (row 'base').", provenance_note(r)]


def table5_efficiency(runs, curves, bench):
    if bench.empty:
        return bench, bench, ["E5 not run (e5.enabled false)."]
    cols = [c for c in ("hardware", "source", "model", "variant", "mode", "batch", "input_size", "device",
                        "images_per_s", "step_ms", "peak_mem_mb", "saved_for_backward_mb", "params",
                        "trainable_params", "ratio_vs_first_order") if c in bench]
    shown = bench[cols].copy()
    for c in ("images_per_s", "step_ms", "peak_mem_mb", "saved_for_backward_mb", "ratio_vs_first_order"):
        if c in shown:
            shown[c] = shown[c].map(lambda v: "" if pd.isna(v) else f"{v:.3g}" if abs(v) < 100 else f"{v:.0f}")
    notes = ["`quadranet bench`: every ratio compares rows of one CSV, measured in one process on one device "
             "with the same layout and precision; source 'layer' = one quadratic product, plain vs "
             "memory-efficient backward (saved_for_backward_mb: what autograd keeps).",
             "Hardware: " + ", ".join(sorted(bench["hardware"].unique())) + "."]
    return bench, shown, notes


BUILDERS: dict[str, tuple[Callable, str]] = {
    "table1_adaptation": (table1_adaptation, "Table 1. Quadratic adaptation (V2) vs training from scratch, across backbones"),
    "table2_pretraining_scale": (table2_pretraining_scale, "Table 2. Accuracy and cost vs the scale of first-order pretraining"),
    "table3_coco": (table3_coco, "Table 3. COCO detection and instance segmentation"),
    "table4_ablations": (table4_ablations, "Table 4. Ablations of the quadratic adapter and its training"),
    "table5_efficiency": (table5_efficiency, "Table 5. Efficiency: throughput and memory"),
}
assert tuple(BUILDERS) == TABLES


def write_tables(runs: pd.DataFrame, curves: pd.DataFrame, bench: pd.DataFrame, out_dir) -> list[str]:
    """Write every table into out_dir; returns their names."""
    for name, (build, title) in BUILDERS.items():
        data, shown, notes = build(runs, curves, bench)
        write_table(out_dir, name, data, shown, title, notes)
    return list(BUILDERS)
