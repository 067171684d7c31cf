"""The claims report: every claim C1-C8 with the paper's value, ours, the scale, and a verdict.

C1-C5 are decided on 95% Student-t intervals over seeds (stats.py): a claim holds when the interval clears its
threshold, does not hold when it lies wholly on the wrong side, and is inconclusive when it straddles it or
fewer than 2 seeds pair up. Per-group verdicts combine into the claim's (`overall`). The rule behind each
verdict is printed with it; every interval is printed. Paper numbers come from a data file
(workflow/paper_numbers.yaml) that cites each one and leaves unknown ones empty.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from .. import io
from ..data.shifts import LINEAR_SHIFTS
from . import BAND, TOLERANCE_PP
from .savings import COST_RULE, CONVERGED_RULE, describe, savings
from .stats import INTERVAL_RULE, fmt_interval, paired, t_interval
from .tables import finished, to_markdown

HOLDS, FAILS, UNTESTABLE = "holds", "does not hold", "not testable at this scale"
INCONCLUSIVE = "inconclusive (the 95% interval includes the threshold)"
FEW_SEEDS = "inconclusive (fewer than 2 paired seeds: no interval)"
NOT_CONVERGED = "inconclusive (baseline not converged)"
START_MEETS = "untestable in this setting (the starting model already meets the target)"
COARSE = "inconclusive (the evaluations are too sparse to place the time to target on either side of the threshold)"
LINEAR = LINEAR_SHIFTS  # every other E3 shift is nonlinear
C1_SAVINGS = 0.90  # the paper's low end
GROUP = ("hardware", "backbone", "variant")
OVERALL_RULE = ("Overall: holds when every testable group holds, does not hold when any does not, not testable when "
                "no group is testable, else inconclusive.")
RULES = {
    "C1": ("per E1 backbone and setting: holds when the scratch baseline converged, the adapted model does not "
           "already start at the target, adaptation reaches the target in every seed, and the lower bound of the "
           "{interval} of the paired per-seed savings to target is >= {c1:.0%} (the paper's low end); does not hold "
           "when adaptation misses the target in a seed or the upper bound is < {c1:.0%}; either verdict on the "
           "savings stands only where it also holds at the evaluation bracket's far end (holds: the pessimistic "
           "lower bound >= {c1:.0%}; does not hold: the optimistic upper bound < {c1:.0%}), else inconclusive, since "
           "the true time to target lies between the evaluation that reaches it and the one before; rows whose "
           "start already meets the target are untestable and no support. {target}. {cost}. {converged}. Savings "
           "incl. the "
           "workflow's pretraining, over the full schedule and vs first-order from scratch are printed, not used. "
           + OVERALL_RULE),
    "competitive": ("per {group}: paired difference adapt - scratch of {what} by seed; holds when the lower bound of "
                    "its {interval} is >= -{margin:g} {unit}, does not hold when the upper bound is < -{margin:g} "
                    "{unit}, else inconclusive. " + OVERALL_RULE),
    "C5": ("per hardware: shifts (at a strength) whose mean zero-shot top-1 lies outside [{lo:g}, {hi:g}]% are "
           "dropped; each kept shift is taken at its strongest kept strength; per seed D = mean over nonlinear "
           "shifts of (adapt - lora) - mean over linear shifts ({linear}) of (adapt - lora); holds when the lower "
           "bound of the {interval} of D is > 0, does not hold when the upper bound is < 0, else inconclusive; "
           "untestable without a kept linear and a kept nonlinear shift. The head-only control (adapt - head) is "
           "printed beside. " + OVERALL_RULE),
}


def load_paper(path) -> tuple[dict, pd.DataFrame]:
    """(claim id -> statement, numbers: claim, quantity, value, unit, source)."""
    data = yaml.safe_load(Path(path).read_text())
    return data["claims"], pd.DataFrame(data["numbers"])


def paper_value(numbers: pd.DataFrame, claim: str) -> str:
    rows = numbers[numbers["claim"] == claim]
    return "; ".join(f"{r.quantity}: {'(not public)' if pd.isna(r.value) else f'{r.value:g}{r.unit}'} [{r.source}]"
                     for r in rows.itertuples()) or "(not public)"


def interval_verdict(iv, threshold: float, strict: bool = False) -> str:
    """HOLDS when the interval's lower bound is >= threshold (> when strict), FAILS when its upper bound is
    < threshold, FEW_SEEDS below 2 values, else INCONCLUSIVE."""
    if iv["n"] < 2:
        return FEW_SEEDS
    if iv["lo"] > threshold or (not strict and iv["lo"] >= threshold):
        return HOLDS
    return FAILS if iv["hi"] < threshold else INCONCLUSIVE


def overall(verdicts) -> str:
    """A claim's verdict from its groups': no testable group -> UNTESTABLE; any FAILS -> FAILS; all HOLDS ->
    HOLDS; else the groups' one inconclusive verdict, or INCONCLUSIVE when they differ."""
    testable = [v for v in verdicts if v not in (UNTESTABLE, START_MEETS)]
    if not testable:
        return UNTESTABLE
    if FAILS in testable:
        return FAILS
    rest = {v for v in testable if v != HOLDS}
    return HOLDS if not rest else rest.pop() if len(rest) == 1 else INCONCLUSIVE


def _name(r: pd.Series) -> str:
    """'backbone setting [hardware]' of a group row (no setting where the group has none)."""
    variant = r.get("variant")
    return f"{r['backbone']}{'' if variant is None or pd.isna(variant) else f' {variant}'} [{r['hardware']}]"


def c1_row(r) -> str:
    """The C1 verdict of one savings row (rule RULES['C1'])."""
    if r["start_meets_target"]:
        return START_MEETS
    if not r["converged"]:
        return NOT_CONVERGED
    if r["adapt_reached"] < r["seeds"]:
        return FAILS
    measured = interval_verdict({"n": r["savings_seed_n"], "lo": r["savings_lo"], "hi": r["savings_hi"]}, C1_SAVINGS)
    if measured == HOLDS and not r["savings_pessimistic_lo"] >= C1_SAVINGS:
        return COARSE
    if measured == FAILS and not r["savings_optimistic_hi"] < C1_SAVINGS:
        return COARSE
    return measured


def c1(runs, curves, bench, tolerance_pp=TOLERANCE_PP, **_):
    sv = savings(runs, curves, tolerance_pp)
    sv = sv[sv["exp"] == "e1"] if len(sv) else sv
    rule = RULES["C1"].format(interval=INTERVAL_RULE, c1=C1_SAVINGS, target=f"Target: mean final top-1 of the "
                              f"scratch runs minus {tolerance_pp:g} pp", cost=COST_RULE, converged=CONVERGED_RULE)
    if sv.empty:
        return "E1 has no finished adapt and scratch runs", UNTESTABLE, rule
    verdicts = [c1_row(r) for _, r in sv.iterrows()]
    ours = "; ".join(f"{_name(r)}: {v}: {describe(r)}" for v, (_, r) in zip(verdicts, sv.iterrows()))
    return ours, overall(verdicts), rule


def _paired_claim(r: pd.DataFrame, value: str, margin: float, what: str, unit: str, by=GROUP):
    """(ours, verdict, rule) of a competitiveness claim: adapt - scratch of `value` paired by seed per group."""
    rule = RULES["competitive"].format(group=" / ".join(by[1:]) or "hardware", what=what, interval=INTERVAL_RULE,
                                       margin=margin, unit=unit)
    p = paired(r, value, "adapt", "scratch", by) if len(r) and value in r else pd.DataFrame()
    if p.empty:
        return None, UNTESTABLE, rule
    verdicts = [interval_verdict(row, -margin) for _, row in p.iterrows()]
    ours = "; ".join(f"{_name(row)}: adapt - scratch {what} {fmt_interval(row, unit=f' {unit}')}: {v}"
                     for v, (_, row) in zip(verdicts, p.iterrows()))
    return ours, overall(verdicts), rule


def c2(runs, curves, bench, competitive_pp=1.0, **_):
    ours, verdict, rule = _paired_claim(finished(runs, "e1"), "acc1", competitive_pp, "top-1", "pp")
    return ours or "E1 has no finished adapt and scratch runs", verdict, rule


def _e2_proxy(runs) -> str:
    """E2 per hardware: scratch top-1, then adaptation's top-1 per source-set size (images per class)."""
    r = finished(runs, "e2")
    if r.empty:
        return ""
    parts = []
    for hw, g in r.groupby("hardware"):
        scratch = g[g["method"] == "scratch"]["acc1"]
        adapt = g[g["method"] == "adapt"].groupby("variant")["acc1"].agg(["mean", "size"])
        adapt = adapt.sort_index(key=lambda v: v.str.extract(r"(\d+)")[0].astype(float))
        parts.append(f"[{hw}] quadratic from scratch {scratch.mean():.2f}% ({len(scratch)} seeds); adaptation after "
                     "first-order pretraining on " + ", ".join(
                         f"{v.removeprefix('src')} images/class: {row['mean']:.2f}%" for v, row in adapt.iterrows()))
    return "; ".join(parts)


def c3(runs, curves, bench, competitive_pp=1.0, **_):
    pre = finished(runs, "pretrain")
    big = pre.get("cfg.data.dataset", pd.Series(dtype=str)).eq("imagenet21k").any() if len(pre) else False
    proxy = _e2_proxy(runs)
    if not big:
        return ("no ImageNet-21K pretraining in this run." + (f" Proxy at this scale (E2, growing source sets): "
                                                               f"{proxy}" if proxy else ""),
                UNTESTABLE, "needs the paper config (ImageNet-21K)")
    r = finished(runs, "e2")
    r = r.assign(n=r["variant"].str.extract(r"(\d+)")[0].astype(float))
    adapt = r[r["method"] == "adapt"]
    largest = adapt[adapt["n"] == adapt.groupby("hardware")["n"].transform("max")]
    ours, verdict, rule = _paired_claim(pd.concat([largest, r[r["method"] == "scratch"]]), "acc1", competitive_pp,
                                        "top-1", "pp", by=("hardware", "backbone"))
    return (f"{proxy}; largest source set: {ours or 'no adapt / scratch pair'}", verdict,
            f"as C2, adaptation after pretraining on the largest ImageNet-21K subset vs the quadratic network from "
            f"scratch (E2): {rule}")


def c4(runs, curves, bench, competitive_pp=1.0, **_):
    coco = finished(runs, "coco")
    coco = coco.assign(box_ap=100 * coco["box_ap"]) if "box_ap" in coco else coco  # AP points, as the paper
    ours, verdict, rule = _paired_claim(coco, "box_ap", competitive_pp, "box AP", "AP points")
    return ours or "no COCO runs (coco.enabled is false or none finished)", verdict, rule


def _kept_shifts(g: pd.DataFrame, band) -> tuple[pd.Series, pd.Series]:
    """(kept: shift -> its strongest strength whose mean zero-shot top-1 lies in the band, dropped: (shift,
    strength) -> mean zero-shot top-1 outside it)."""
    zero_shot = g.groupby(["shift", "strength"])["initial_acc1"].mean()
    inside = zero_shot.between(*band)
    kept = zero_shot[inside].reset_index().groupby("shift")["strength"].max()
    return kept, zero_shot[~inside]


def _did(acc: pd.DataFrame, shifts, other: str) -> tuple[pd.Series, pd.DataFrame]:
    """(per seed: mean over nonlinear shifts of adapt - other minus that over linear ones, adapt - other per
    seed and shift); seeds lacking a shift are left out."""
    adv = pd.DataFrame({s: acc[(s, "adapt")] - acc[(s, other)] for s in shifts
                        if (s, "adapt") in acc and (s, other) in acc}).dropna()
    lin, non = [s for s in adv if s in LINEAR], [s for s in adv if s not in LINEAR]
    d = adv[non].mean(axis=1) - adv[lin].mean(axis=1) if lin and non else pd.Series(dtype=float)
    return d, adv


def _c5_hardware(g: pd.DataFrame, band) -> tuple[str, str]:
    """(text, verdict) of C5 on one hardware's E3 runs."""
    kept, dropped = _kept_shifts(g, band)
    text = "dropped (zero-shot top-1 outside the band): " + (", ".join(
        f"{s} {k:g} ({a:.1f}%)" for (s, k), a in dropped.items()) or "none")
    if not (any(s in LINEAR for s in kept.index) and any(s not in LINEAR for s in kept.index)):
        return text + "; no kept linear or no kept nonlinear shift", UNTESTABLE
    g = g[g["strength"] == g["shift"].map(kept)]
    acc = g.pivot_table(index="seed", columns=["shift", "method"], values="acc1", aggfunc="mean")
    d, adv = _did(acc, kept.index, "lora")
    if d.empty:
        return text + "; no seed with adapt and lora runs on a kept linear and a kept nonlinear shift", UNTESTABLE
    iv = t_interval(d)
    head_d, head = _did(acc, kept.index, "head")
    text += ("; kept: " + ", ".join(f"{s} {k:g} (adapt - lora {adv[s].mean():+.2f} pp)" for s, k in kept.items()
                                    if s in adv)
             + f"; D = nonlinear - linear advantage of adapt over lora: {fmt_interval(iv, unit=' pp')}")
    if len(head):
        text += (f"; head-only control: adapt - head over kept shifts "
                 f"{fmt_interval(t_interval(head.mean(axis=1)), unit=' pp')}, its D "
                 f"{fmt_interval(t_interval(head_d), unit=' pp')}")
    return text, interval_verdict(iv, 0.0, strict=True)


def c5(runs, curves, bench, band=BAND, **_):
    rule = RULES["C5"].format(lo=band[0], hi=band[1], linear=", ".join(LINEAR), interval=INTERVAL_RULE)
    r = finished(runs, "e3")
    if r.empty:
        return "E3 not run", UNTESTABLE, rule
    r = r.assign(shift=r["cfg.data.shift"], strength=r["cfg.data.shift_strength"].astype(float))
    parts, verdicts = [], []
    for hw, g in r.groupby("hardware"):
        text, verdict = _c5_hardware(g, band)
        parts.append(f"[{hw}] {verdict}: {text}")
        verdicts.append(verdict)
    return "; ".join(parts), overall(verdicts), rule


def c6(runs, curves, bench, **_):
    r = finished(runs)
    if r.empty or "initial_acc1" not in r:
        return "no runs", UNTESTABLE, ""
    if "head_reinitialised" in r:
        r = r[~r["head_reinitialised"].fillna(True).astype(bool)]
    if not curves.empty and "tag" in curves:  # the loss of the evaluation before training, where logged
        init = curves[(curves["event"] == "eval") & (curves["tag"] == "initial")]
        loss = init.groupby(["hardware", "run"])["eval_loss"].first()
        r = r.assign(initial_loss=[loss.get((h, run), np.nan) for h, run in zip(r["hardware"], r["run"])])
    keys = ["hardware", "exp", "backbone", "variant", "seed"]
    values = [v for v in ("initial_acc1", "initial_loss") if v in r]
    p = r[r["method"].isin(["adapt", "finetune"])].drop_duplicates([*keys, "method"]).pivot_table(
        index=keys, columns="method", values=values)
    if p.empty or not {"adapt", "finetune"} <= set(p.columns.get_level_values("method")):
        return "no adapt / finetune pair starting from the same weights with the same head", UNTESTABLE, ""
    diff = {v: (p[(v, "adapt")] - p[(v, "finetune")]).abs().dropna() for v in values}
    n = len(diff["initial_acc1"])
    ok = n > 0 and diff["initial_acc1"].max() == 0.0 and diff.get("initial_loss", pd.Series([0.0])).max() <= 1e-6
    loss = f", max |Δ initial eval loss| = {diff['initial_loss'].max():.2g}" if "initial_loss" in diff else ""
    return (f"{n} pairs (adapt vs finetune, same weights, data and seed): max |Δ initial top-1| = "
            f"{diff['initial_acc1'].max():.4f} pp{loss}", HOLDS if ok else FAILS,
            "holds when the converted model's accuracy before any training equals the first-order model's exactly "
            "(and its evaluation loss to 1e-6, the log's precision)")


def c7(runs, curves, bench, **_):
    """Memory-efficient backward against autograd's standard backward of the same adapter (`adapted_autograd`;
    bench rows from before that variant compare against `adapted`)."""
    if bench.empty or "saved_for_backward_mb" not in bench:
        return "E5 not run", UNTESTABLE, ""
    b = bench.dropna(subset=["saved_for_backward_mb"])
    variant = b["variant"].astype(str)
    keys = [c for c in ("hardware", "source", "model", "mode", "batch", "input_size") if c in b]
    eff = b[variant.str.contains("memeff|memory", regex=True)].groupby(keys)["saved_for_backward_mb"].mean()
    standard = b[variant == "adapted_autograd"].groupby(keys)["saved_for_backward_mb"].mean()
    plain = b[variant.isin(["plain", "adapted"])].groupby(keys)["saved_for_backward_mb"].mean()
    reference = standard.combine_first(plain[~plain.index.isin(standard.index)]) if len(standard) else plain
    ratio = (eff / reference).dropna()
    if len(standard):  # rows whose only reference is the fused kernel (memory-efficient itself) say nothing
        ratio = ratio[ratio.index.isin(standard.index)]
    if ratio.empty:
        return "no standard / memory-efficient pair in the bench", UNTESTABLE, ""
    ours = "; ".join(f"{' / '.join(map(str, k))}: {100 * (1 - v):.1f}% less kept for backward" for k, v in ratio.items())
    return ours, HOLDS if (ratio < 1).all() else FAILS, (
        "holds when memory-efficient backward keeps less than autograd's standard backward in every pair")


def c8(runs, curves, bench, **_):
    ours = "no other high-order model (HorNet, GFNet, ...) is benchmarked here"
    if not bench.empty and {"variant", "ratio_vs_first_order"} <= set(bench.columns):
        v1 = bench[(bench["variant"] == "v1") & (bench.get("mode", "train") == "train")]
        if len(v1):
            ours += "; context, V1 train-step time relative to first-order: " + ", ".join(
                f"{r.model} [{r.hardware}] {r.ratio_vs_first_order:.2f}x" for r in v1.itertuples())
    return ours, UNTESTABLE, "needs a state-of-the-art high-order baseline in the bench"


CHECKS = {"C1": c1, "C2": c2, "C3": c3, "C4": c4, "C5": c5, "C6": c6, "C7": c7, "C8": c8}


def evaluate_claims(runs, curves, bench, paper_file, scale: str, competitive_pp: float = 1.0,
                    tolerance_pp: float = TOLERANCE_PP, band: tuple = BAND) -> pd.DataFrame:
    """One row per claim: statement, paper value, ours, scale, verdict, rule."""
    statements, numbers = load_paper(paper_file)
    hardware = ", ".join(sorted(set(finished(runs)["hardware"]) | set(bench.get("hardware", [])))) or "none"
    rows = []
    for cid, check in CHECKS.items():
        ours, verdict, rule = check(runs, curves, bench, competitive_pp=competitive_pp, tolerance_pp=tolerance_pp,
                                    band=tuple(band))
        rows.append({"claim": cid, "statement": statements.get(cid, ""), "paper": paper_value(numbers, cid),
                     "ours": ours, "scale": f"{scale} ({hardware})", "verdict": verdict, "rule": rule})
    return pd.DataFrame(rows)


def write_claims(claims: pd.DataFrame, out_md, out_csv=None) -> None:
    lines = ["# Claims of QuadraNet V2 (arXiv 2405.03192) and what this run measured", "",
             to_markdown(claims[["claim", "verdict", "paper", "ours", "scale"]]), ""]
    for r in claims.itertuples():
        lines += [f"## {r.claim}: {r.verdict}", "", f"- Paper: {r.statement} {r.paper}", f"- Ours: {r.ours}",
                  f"- Scale: {r.scale}", f"- Verdict rule: {r.rule or 'n/a'}", ""]
    lines.append("Verdicts are for this scale only; paper numbers we could not read stay empty "
                 "(workflow/paper_numbers.yaml).")
    io.write_text(out_md, "\n".join(lines) + "\n")
    io.write_text(out_csv or Path(out_md).with_suffix(".csv"), claims.to_csv(index=False))
