"""The claims report: the paper's claims C1-C9 and the suite's own questions A1-A2, each with the paper's value,
ours with its interval, a verdict and one line of why.

Every verdict comes from a 95% Student-t interval over seeds, paired by seed (stats.py), tested against the
claim as worded: a claim holds when the interval clears its threshold, does not hold when it lies wholly on the
wrong side, and is inconclusive when it straddles it or fewer than 2 seeds pair up. Per-group verdicts combine
into the claim's (`overall`). Why each rule is its claim's test: docs/paper.md, "Verdict rules". Each run counts
once (`collect.count_once`). Paper numbers come from workflow/paper_numbers.yaml, which cites each one and
leaves unknown ones empty.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd
import yaml

from .. import atomic
from ..data.shifts import LINEAR_SHIFTS
from . import BAND, TOLERANCE_PP
from .collect import count_once
from .savings import COST_RULE, CONVERGED_RULE, describe, method_times, pct, savings
from .stats import INTERVAL_RULE, fmt_interval, paired, t_interval
from .tables import budget_text, finished, to_markdown

HOLDS, FAILS, UNTESTABLE = "holds", "does not hold", "not testable at this scale"
INCONCLUSIVE = "inconclusive (the 95% interval includes the threshold)"
FEW_SEEDS = "inconclusive (fewer than 2 paired seeds: no interval)"
NOT_CONVERGED = "inconclusive (baseline not converged)"
START_MEETS = "untestable in this setting (the starting model already meets the target)"
COARSE = "inconclusive (the evaluations are too sparse to place the time to target on either side of the threshold)"
LINEAR = LINEAR_SHIFTS  # every other E3 shift is nonlinear
C1_SAVINGS = 0.90  # the paper's low end
CONTROLS = ("finetune", "lora", "head")  # from the same weights as adapt: what the quadratic term must beat
SHORT = {"finetune": "ft", "lora": "LoRA", "head": "head"}
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
           "start already meets the target are untestable and no support. A seed whose scratch run misses the "
           "target leaves the paired interval (the counts say how many reached it). {target}. {cost}. {converged}. "
           "Savings counting evaluation, incl. the workflow's pretraining, over the full schedule and vs first-order "
           "from scratch are printed, not used. " + OVERALL_RULE),
    "competitive": ("per {group}: paired difference adapt - scratch of {what} by seed; holds when the lower bound of "
                    "its {interval} is >= -{margin:g} {unit}, does not hold when the upper bound is < -{margin:g} "
                    "{unit}, else inconclusive; untestable where the adapted model's start already meets the "
                    "scratch runs' mean minus {margin:g} {unit} (adapt - start printed): there adaptation only has "
                    "to keep what it was given. " + OVERALL_RULE),
    "C5": ("per hardware: shifts (at a strength) whose mean zero-shot top-1 lies outside [{lo:g}, {hi:g}]% are "
           "dropped; each kept shift is taken at its strongest kept strength; per seed A = mean over the kept "
           "nonlinear shifts of (adapt - lora) top-1; holds when the lower bound of the {interval} of A is > 0, "
           "does not hold when its upper bound is < 0, else inconclusive; untestable without a kept nonlinear "
           "shift. Printed beside, not used: D = A minus the same mean over the linear shifts ({linear}), the "
           "head-only control and, where E3 ran it (adapt_rbf), the adapter with the rbf kernel minus bilinear's "
           "and minus LoRA's over the kept nonlinear shifts. " + OVERALL_RULE),
    "C8": ("per size and high-order peer ({peers}, each from random init on the same task, schedule and seeds as "
           "QuadraNet V1): accuracy is the paired difference by seed of final top-1, V1 minus the peer, per hardware "
           "of the runs; speed and memory come from every bench CSV that measured V1 and the peer in one process "
           "(train step: images/s ratio V1 / peer, faster or slower only beyond half the sum of the two rows' "
           "relative interquartile ranges; memory: what autograd keeps for one train step's backward, "
           "saved_for_backward_mb, the one memory figure measured on every device). Holds when the lower bound of "
           "every accuracy {interval} is >= -{margin:g} pp (similar accuracy or better) and V1 trains faster and "
           "keeps less for backward in every bench; does not hold when an upper bound is < -{margin:g} pp or V1 "
           "trains slower or keeps more in a bench; else inconclusive; not testable without both runs and bench "
           "rows. The largest throughput ratio and memory saving are printed beside the paper's 'up to 1.5x' and "
           "'30% less'. " + OVERALL_RULE),
    "C9": ("per hardware and kernel (E4 variants whose adapter.kernel is not bilinear): paired difference by seed "
           "of final top-1, kernel minus the base variant (bilinear, otherwise the same adaptation); holds when the "
           "lower bound of its {interval} is > 0, does not hold when the upper bound is < 0, else inconclusive. "
           + OVERALL_RULE),
    "A1": ("per E1 backbone and setting: paired differences by seed of final top-1, adapt minus each control that "
           "starts from the same weights ({controls}); holds when the lower bound of every control's {interval} "
           "is > 0 (the quadratic adapter beats them all), does not hold when the upper bound of any is < 0 (a "
           "control from the same weights does better), else inconclusive. Each method's time to the scratch "
           "target (training device-seconds, seeds reaching it) and savings are printed beside. " + OVERALL_RULE),
    "A2": ("per backbone: paired difference by seed of final top-1, quadratic from scratch minus first-order from "
           "scratch (same schedule, same data); holds when the lower bound of its {interval} is > 0, does not hold "
           "when the upper bound is < 0, else inconclusive. QuadraNet V1 from scratch is printed beside. "
           + OVERALL_RULE),
}
OURS = {  # the suite's own questions, beside the paper's claims
    "A1": ("The quadratic term, rather than the reuse of pretrained weights, earns the adapted model's accuracy: "
           "adaptation beats the controls that start from the same weights (finetune, LoRA at matched parameters, "
           "head only)."),
    "A2": "The paper's premise: the quadratic network trained from scratch beats the first-order one trained from "
          "scratch.",
}
OURS_PAPER = {"A1": "not claimed (our question)", "A2": "premise (no number)"}
WHY_MAX = 300


@dataclass
class Finding:
    """A claim's verdict, the headline of ours (with its interval), one line of why, the details, the rule."""
    verdict: str
    ours: str
    why: str
    details: str
    rule: str


def load_paper(path) -> tuple[dict, pd.DataFrame, dict]:
    """(claim id -> statement, numbers: claim, quantity, value, unit, source, claim id -> headline)."""
    data = yaml.safe_load(Path(path).read_text())
    return data["claims"], pd.DataFrame(data["numbers"]), data.get("headlines") or {}


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


def _name(r, hardware=True) -> str:
    """'backbone setting [hardware]' of a group row (no setting where the group has none); `hardware`: whether to
    name it, or the rows of the claim (named only where they span several)."""
    setting = r.get("variant")
    name = f"{r['backbone']}{'' if setting is None or pd.isna(setting) else f' {setting}'}"
    if isinstance(hardware, pd.DataFrame):
        hardware = hardware["hardware"].nunique() > 1
    return f"{name} [{r['hardware']}]" if hardware else name


def _why(verdict: str, named: list[tuple[str, str]], decisive: dict) -> str:
    """One line: which groups decided the verdict, with the reason for each kind (decisive: verdict -> reason)."""
    by = {}
    for name, v in named:
        by.setdefault(v, []).append(name)
    if verdict == FAILS:
        return f"{decisive[FAILS]}: {', '.join(by[FAILS])}"[:WHY_MAX]
    if verdict == HOLDS:
        return f"{decisive[HOLDS]}: {', '.join(by[HOLDS])}"[:WHY_MAX]
    if verdict == UNTESTABLE:
        return decisive.get(UNTESTABLE, "nothing at this scale can test it")[:WHY_MAX]
    parts = [f"{v.split(' (')[0] if v.startswith('inconclusive') else v} on {', '.join(n)}"
             + (f" ({v.split('(', 1)[1]}" if "(" in v and v != START_MEETS else "") for v, n in by.items()]
    return "; ".join(parts)[:WHY_MAX]


def _short(iv, scale: float = 1.0, unit: str = " pp", digits: int = 2) -> str:
    """'+1.20 [+0.40, +2.00] pp' (no n), or the mean alone below 2 values."""
    text = fmt_interval(iv, digits, scale, unit)
    return text.rsplit(" (n=", 1)[0] if int(iv["n"]) >= 2 else text


# ---------------------------------------------------------------- C1
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


def _savings_short(r) -> str:
    iv = {"n": r["savings_seed_n"], "mean": r["savings_seed_mean"], "lo": r["savings_lo"], "hi": r["savings_hi"]}
    return f"{_short(iv, 100, '%', 1)} (adapt reached {r['adapt_reached']}/{r['seeds']})"


def c1(runs, curves, bench, tolerance_pp=TOLERANCE_PP, **_) -> Finding:
    sv = savings(runs, curves, tolerance_pp)
    sv = sv[sv["exp"] == "e1"] if len(sv) else sv
    rule = RULES["C1"].format(interval=INTERVAL_RULE, c1=C1_SAVINGS, target=f"Target: mean final top-1 of the "
                              f"scratch runs minus {tolerance_pp:g} pp", cost=COST_RULE, converged=CONVERGED_RULE)
    if sv.empty:
        return Finding(UNTESTABLE, "no E1 adapt and scratch runs", "E1 not run", "E1 has no finished adapt and "
                       "scratch runs", rule)
    verdicts = [c1_row(r) for _, r in sv.iterrows()]
    named = [(_name(r, sv), v) for v, (_, r) in zip(verdicts, sv.iterrows())]
    ours = "; ".join(f"{_name(r, sv)}: {_savings_short(r)}" for v, (_, r) in zip(verdicts, sv.iterrows())
                     if v != START_MEETS) or "every row starts at the target"
    details = "; ".join(f"{_name(r)}: {v}: {describe(r)}" for v, (_, r) in zip(verdicts, sv.iterrows()))
    verdict = overall(verdicts)
    why = _why(verdict, named, {FAILS: f"savings to target below {C1_SAVINGS:.0%} (upper bound, both bracket ends) "
                                       f"or a seed never reaching it",
                                HOLDS: f"savings to target >= {C1_SAVINGS:.0%} (lower bound, both bracket ends)",
                                UNTESTABLE: "every setting starts at the target"})
    return Finding(verdict, ours, why, details, rule)


# ---------------------------------------------------------------- C2-C4: competitive with scratch
def _paired_claim(r: pd.DataFrame, value: str, margin: float, what: str, unit: str, start: Optional[str] = None,
                  by=GROUP) -> Optional[tuple]:
    """(verdicts, named, ours, details) of a competitiveness claim: adapt - scratch of `value` paired by seed per
    group; groups where the adapt runs' mean `start` already meets the scratch mean minus `margin` are untestable
    (adapt - start printed). None without a pair."""
    p = paired(r, value, "adapt", "scratch", by) if len(r) and value in r else pd.DataFrame()
    if p.empty:
        return None
    verdicts, named, ours, details = [], [], [], []
    for _, row in p.iterrows():
        g = r
        for k in by:
            g = g[g[k] == row[k]]
        target = g[g["method"] == "scratch"][value].mean() - margin
        kept = ""
        if start and start in g:
            a = g[g["method"] == "adapt"].set_index("seed")
            if a[start].mean() >= target - 1e-9:
                v = START_MEETS
                kept = f"; adapt - start {_short(t_interval((a[value] - a[start]).dropna()), unit=f' {unit}')}"
            else:
                v = interval_verdict(row, -margin)
        else:
            v = interval_verdict(row, -margin)
        verdicts.append(v)
        named.append((_name(row, p), v))
        diff = _short(row, unit=f" {unit}")
        if v != START_MEETS:
            ours.append(f"{_name(row, p)}: {diff}")
        details.append(f"{_name(row)}: adapt - scratch {what} {fmt_interval(row, unit=f' {unit}')}{kept}: {v}")
    return verdicts, named, "; ".join(ours), "; ".join(details)


def _competitive(r, value, margin, what, unit, start, absent: str, by=GROUP) -> Finding:
    rule = RULES["competitive"].format(group=" / ".join(by[1:]) or "hardware", what=what, interval=INTERVAL_RULE,
                                       margin=margin, unit=unit)
    got = _paired_claim(r, value, margin, what, unit, start, by)
    if got is None:
        return Finding(UNTESTABLE, absent, absent, absent, rule)
    verdicts, named, ours, details = got
    verdict = overall(verdicts)
    why = _why(verdict, named, {FAILS: f"adapt - scratch below -{margin:g} {unit} (upper bound)",
                                HOLDS: f"adapt - scratch >= -{margin:g} {unit} (lower bound)",
                                UNTESTABLE: "every setting's start already meets the scratch accuracy"})
    return Finding(verdict, ours or "every setting starts at the target", why, details, rule)


def c2(runs, curves, bench, competitive_pp=1.0, **_) -> Finding:
    return _competitive(finished(runs, "e1"), "acc1", competitive_pp, "top-1", "pp", "initial_acc1",
                        "E1 has no finished adapt and scratch runs")


def _e2_proxy(runs, competitive_pp: float) -> tuple[str, str]:
    """(headline, details) of E2 per hardware: adapt - scratch top-1 paired by seed per source-set size."""
    r = finished(runs, "e2")
    if r.empty:
        return "", ""
    scratch = r[r["method"] == "scratch"]
    heads, parts = [], []
    for (hw, source), g in r[r["method"] == "adapt"].groupby(["hardware", "variant"], sort=False):
        p = paired(pd.concat([g, scratch[scratch["hardware"] == hw]]), "acc1", "adapt", "scratch", ["hardware"])
        if p.empty:
            continue
        row = p.iloc[0]
        n = source.removeprefix("src")
        heads.append(f"{n}/class: {_short(row)}")
        parts.append(f"[{hw}] after first-order pretraining on {n} images/class: adapt - scratch top-1 "
                     f"{fmt_interval(row, unit=' pp')}")
    return "; ".join(heads), "; ".join(parts)


def c3(runs, curves, bench, competitive_pp=1.0, **_) -> Finding:
    pre = finished(runs, "pretrain")
    big = pre.get("cfg.data.dataset", pd.Series(dtype=str)).eq("imagenet21k").any() if len(pre) else False
    head, proxy = _e2_proxy(runs, competitive_pp)
    if not big:
        return Finding(UNTESTABLE, f"proxy (E2, adapt - scratch): {head}" if head else "no ImageNet-21K runs",
                       "needs ImageNet-21K pretraining (paper.yaml); the E2 proxy is shown, not judged",
                       "no ImageNet-21K pretraining in this run." + (f" Proxy at this scale (E2, growing source "
                                                                      f"sets): {proxy}" if proxy else ""),
                       "needs the paper config (ImageNet-21K)")
    r = finished(runs, "e2")
    r = r.assign(n=r["variant"].str.extract(r"(\d+)")[0].astype(float))
    adapt = r[r["method"] == "adapt"]
    largest = adapt[adapt["n"] == adapt.groupby("hardware")["n"].transform("max")]
    f = _competitive(pd.concat([largest, r[r["method"] == "scratch"]]), "acc1", competitive_pp, "top-1", "pp", None,
                     "no adapt / scratch pair", by=("hardware", "backbone"))
    return Finding(f.verdict, f.ours, f.why, f"{proxy}; largest source set: {f.details}",
                   f"as C2, adaptation after pretraining on the largest ImageNet-21K subset vs the quadratic network "
                   f"from scratch (E2): {f.rule}")


def c4(runs, curves, bench, competitive_pp=1.0, **_) -> Finding:
    coco = finished(runs, "coco")
    if "box_ap" in coco:  # AP points, as the paper
        coco = coco.assign(box_ap=100 * coco["box_ap"],
                           initial_box_ap=100 * coco["initial_box_ap"] if "initial_box_ap" in coco else np.nan)
    return _competitive(coco, "box_ap", competitive_pp, "box AP", "AP points", "initial_box_ap",
                        "no COCO runs (coco.enabled is false or none finished)")


# ---------------------------------------------------------------- C5
def _kept_shifts(g: pd.DataFrame, band) -> tuple[pd.Series, pd.Series]:
    """(kept: shift -> its strongest strength whose mean zero-shot top-1 lies in the band, dropped: (shift,
    strength) -> mean zero-shot top-1 outside it)."""
    zero_shot = g.groupby(["shift", "strength"])["initial_acc1"].mean()
    inside = zero_shot.between(*band)
    kept = zero_shot[inside].reset_index().groupby("shift")["strength"].max()
    return kept, zero_shot[~inside]


def _advantage(acc: pd.DataFrame, shifts, other: str) -> pd.DataFrame:
    """adapt - other top-1 per seed (rows) and shift (columns); seeds lacking a shift are left out."""
    return pd.DataFrame({s: acc[(s, "adapt")] - acc[(s, other)] for s in shifts
                         if (s, "adapt") in acc and (s, other) in acc}).dropna()


def _split(adv: pd.DataFrame) -> tuple[pd.Series, pd.Series]:
    """(per seed: mean over nonlinear shifts, minus the mean over linear ones (empty without both))."""
    lin, non = [s for s in adv if s in LINEAR], [s for s in adv if s not in LINEAR]
    a = adv[non].mean(axis=1) if non else pd.Series(dtype=float)
    d = a - adv[lin].mean(axis=1) if lin and non else pd.Series(dtype=float)
    return a, d


def _c5_hardware(g: pd.DataFrame, band) -> tuple[str, str, str]:
    """(headline, details, verdict) of C5 on one hardware's E3 runs."""
    kept, dropped = _kept_shifts(g, band)
    text = "dropped (zero-shot top-1 outside the band): " + (", ".join(
        f"{s} {k:g} ({a:.1f}%)" for (s, k), a in dropped.items()) or "none")
    if not any(s not in LINEAR for s in kept.index):
        return "no kept nonlinear shift", text + "; no kept nonlinear shift", UNTESTABLE
    g = g[g["strength"] == g["shift"].map(kept)]
    acc = g.pivot_table(index="seed", columns=["shift", "method"], values="acc1", aggfunc="mean")
    adv = _advantage(acc, kept.index, "lora")
    a, d = _split(adv)
    if a.empty:
        return "no adapt / lora pair", text + "; no seed with adapt and lora runs on a kept nonlinear shift", UNTESTABLE
    iv = t_interval(a)
    text += ("; kept: " + ", ".join(f"{s} {k:g} (adapt - lora {adv[s].mean():+.2f} pp)" for s, k in kept.items()
                                    if s in adv)
             + f"; A = mean over nonlinear shifts of adapt - lora: {fmt_interval(iv, unit=' pp')}")
    if len(d):
        text += f"; secondary D = A minus the linear shifts' mean: {fmt_interval(t_interval(d), unit=' pp')}"
    head = _advantage(acc, kept.index, "head")
    if len(head):
        text += ("; head-only control: adapt - head over kept shifts "
                 f"{fmt_interval(t_interval(head.mean(axis=1)), unit=' pp')}")
    nonlinear = [s for s in kept.index if s not in LINEAR]
    rbf = _advantage(acc, nonlinear, "adapt_rbf")  # bilinear - rbf
    if len(rbf):
        rbf_lora = rbf.rsub(_advantage(acc, nonlinear, "lora")).dropna()  # (adapt - lora) - (adapt - rbf)
        added = g.groupby("method")["params_added"].mean() if "params_added" in g else pd.Series(dtype=float)
        params = (f" ({added['adapt_rbf']:,.0f} added parameters, bilinear {added['adapt']:,.0f})"
                  if {"adapt", "adapt_rbf"} <= set(added.index) else "")
        text += (f"; the adapter with the rbf kernel (adapt_rbf) over the kept nonlinear shifts, minus bilinear's: "
                 f"{fmt_interval(t_interval(-rbf.mean(axis=1)), unit=' pp')}{params}, minus LoRA's: "
                 f"{fmt_interval(t_interval(rbf_lora.mean(axis=1)), unit=' pp')}")
    budget = budget_text(g)
    text += f"; {budget}" if budget else ""
    return f"adapt - LoRA on nonlinear shifts {_short(iv)}", text, interval_verdict(iv, 0.0, strict=True)


def c5(runs, curves, bench, band=BAND, **_) -> Finding:
    rule = RULES["C5"].format(lo=band[0], hi=band[1], linear=", ".join(LINEAR), interval=INTERVAL_RULE)
    r = finished(runs, "e3")
    if r.empty:
        return Finding(UNTESTABLE, "E3 not run", "E3 not run", "E3 not run", rule)
    r = r.assign(shift=r["cfg.data.shift"], strength=r["cfg.data.shift_strength"].astype(float))
    heads, parts, named = [], [], []
    for hw, g in r.groupby("hardware"):
        head, text, verdict = _c5_hardware(g, band)
        heads.append(head if r["hardware"].nunique() == 1 else f"[{hw}] {head}")
        parts.append(f"[{hw}] {verdict}: {text}")
        named.append((hw, verdict))
    verdict = overall(v for _, v in named)
    why = _why(verdict, named, {FAILS: "the quadratic adapter adapts worse than LoRA to the nonlinear shifts",
                                HOLDS: "the quadratic adapter beats LoRA on the nonlinear shifts"})
    return Finding(verdict, "; ".join(heads), why, "; ".join(parts), rule)


# ---------------------------------------------------------------- C6-C8
def c6(runs, curves, bench, **_) -> Finding:
    rule = ("holds when the converted model's accuracy before any training equals the first-order model's exactly "
            "(and its evaluation loss to 1e-6, the log's precision)")
    r = finished(runs)
    if r.empty or "initial_acc1" not in r:
        return Finding(UNTESTABLE, "no runs", "no runs", "no runs", rule)
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
        absent = "no adapt / finetune pair starting from the same weights with the same head"
        return Finding(UNTESTABLE, absent, absent, absent, rule)
    diff = {v: (p[(v, "adapt")] - p[(v, "finetune")]).abs().dropna() for v in values}
    n = len(diff["initial_acc1"])
    ok = n > 0 and diff["initial_acc1"].max() == 0.0 and diff.get("initial_loss", pd.Series([0.0])).max() <= 1e-6
    loss = f", max |Δ initial eval loss| = {diff['initial_loss'].max():.2g}" if "initial_loss" in diff else ""
    ours = f"max |Δ initial top-1| = {diff['initial_acc1'].max():.4f} pp{loss} ({n} pairs)"
    return Finding(HOLDS if ok else FAILS, ours, "converted and first-order models score the same before training"
                   if ok else "a converted model starts elsewhere than its first-order model",
                   f"{n} pairs (adapt vs finetune, same weights, data and seed): {ours}", rule)


def c7(runs, curves, bench, **_) -> Finding:
    """Memory-efficient backward against autograd's standard backward of the same adapter (`adapted_autograd`;
    bench rows from before that variant compare against `adapted`)."""
    rule = "holds when memory-efficient backward keeps less than autograd's standard backward in every pair"
    if bench.empty or "saved_for_backward_mb" not in bench:
        return Finding(UNTESTABLE, "E5 not run", "E5 not run", "E5 not run", rule)
    b = bench.dropna(subset=["saved_for_backward_mb"])
    bench_variant = b["variant"].astype(str)
    keys = [c for c in ("hardware", "source", "model", "mode", "batch", "input_size") if c in b]
    eff = b[bench_variant.str.contains("memeff|memory", regex=True)].groupby(keys)["saved_for_backward_mb"].mean()
    standard = b[bench_variant == "adapted_autograd"].groupby(keys)["saved_for_backward_mb"].mean()
    plain = b[bench_variant.isin(["plain", "adapted"])].groupby(keys)["saved_for_backward_mb"].mean()
    reference = standard.combine_first(plain[~plain.index.isin(standard.index)]) if len(standard) else plain
    ratio = (eff / reference).dropna()
    if len(standard):  # rows whose only reference is the fused kernel (memory-efficient itself) say nothing
        ratio = ratio[ratio.index.isin(standard.index)]
    if ratio.empty:
        absent = "no standard / memory-efficient pair in the bench"
        return Finding(UNTESTABLE, absent, absent, absent, rule)
    saved = 100 * (1 - ratio)
    ours = f"{saved.min():.0f}-{saved.max():.0f}% less kept for backward ({len(ratio)} model/layout pairs)"
    details = "; ".join(f"{' / '.join(map(str, k))}: {100 * (1 - v):.1f}% less kept for backward"
                        for k, v in ratio.items())
    ok = bool((ratio < 1).all())
    return Finding(HOLDS if ok else FAILS, ours, "less kept in every pair" if ok else "some pair keeps more",
                   details, rule)


PEERS = ("hornet", "gfnet", "focalnet")  # the high-order peers of the bench (bench.speed.SIZED_VARIANTS)


def _v1_vs_peer_bench(bench: pd.DataFrame) -> pd.DataFrame:
    """Per bench CSV, size and peer: train images/s ratio V1 / peer with its noise band, infer ratio, memory ratio."""
    if bench.empty or "arch" not in bench or not bench["variant"].isin(PEERS).any():
        return pd.DataFrame()
    b = bench[bench["variant"].isin(("v1", *PEERS)) & bench["arch"].notna()]
    rows = []
    for (hw, src, model), g in b.groupby(["hardware", "source", "model"]):
        v1 = g[g["variant"] == "v1"].set_index("mode")
        if v1.empty or "train" not in v1.index:
            continue
        size = str(v1.loc["train", "arch"]).removeprefix("quadranet_v1_")
        for peer, q in g[g["variant"].isin(PEERS)].groupby("variant"):
            q = q.set_index("mode")
            if "train" not in q.index:
                continue
            t, u = v1.loc["train"], q.loc["train"]
            noise = (t["step_ms_iqr"] / t["step_ms"] + u["step_ms_iqr"] / u["step_ms"]) / 2
            rows.append({"hardware": hw, "source": src, "size": size, "peer": peer, "peer_arch": u["arch"],
                         "train_ratio": t["images_per_s"] / u["images_per_s"], "noise": noise,
                         "infer_ratio": (v1.loc["infer", "images_per_s"] / q.loc["infer", "images_per_s"]
                                         if "infer" in v1.index and "infer" in q.index else np.nan),
                         "memory_ratio": t["saved_for_backward_mb"] / u["saved_for_backward_mb"]})
    return pd.DataFrame(rows)


def _v1_vs_peer_accuracy(runs: pd.DataFrame, size: str, peer_arch: str) -> pd.DataFrame:
    """Per hardware: the paired interval (by seed) of final top-1, V1 at `size` minus `peer_arch`, both from scratch."""
    r = finished(runs)
    if r.empty or "cfg.model.arch" not in r:
        return pd.DataFrame()
    r = r[r["cfg.method"] == "scratch"].drop_duplicates(["hardware", "run"])
    arch = r["cfg.model.arch"].map({f"quadranet_v1_{size}": "v1", peer_arch: "peer"})
    r = r.assign(method=arch).dropna(subset=["method"])
    return paired(r, "acc1", "v1", "peer", ["hardware"]) if len(r) else pd.DataFrame()


def _kept(ratio: float) -> str:
    """V1's memory kept for backward against a peer's, in words."""
    return f"{100 * (1 - ratio):.0f}% less kept" if ratio <= 1 else f"{100 * (ratio - 1):.0f}% more kept"


def c8(runs, curves, bench, competitive_pp=1.0, **_) -> Finding:
    rule = RULES["C8"].format(peers=", ".join(PEERS), interval=INTERVAL_RULE, margin=competitive_pp)
    speed = _v1_vs_peer_bench(bench)
    if speed.empty:
        absent = "no bench measured QuadraNet V1 beside a high-order peer (hornet, gfnet, focalnet)"
        return Finding(UNTESTABLE, absent, absent, absent, rule)
    verdicts, named, heads, details = [], [], [], []
    for (size, peer, peer_arch), g in speed.groupby(["size", "peer", "peer_arch"]):
        acc = _v1_vs_peer_accuracy(runs, size, peer_arch)
        faster = (g["train_ratio"] > 1 + g["noise"]).all()
        slower = (g["train_ratio"] < 1 - g["noise"]).any()
        less, more = (g["memory_ratio"] < 1).all(), (g["memory_ratio"] > 1).any()
        if acc.empty:
            v = UNTESTABLE
        elif any(interval_verdict(row, -competitive_pp) == FAILS for _, row in acc.iterrows()) or slower or more:
            v = FAILS
        elif acc["n"].min() < 2:
            v = FEW_SEEDS
        elif all(interval_verdict(row, -competitive_pp) == HOLDS for _, row in acc.iterrows()) and faster and less:
            v = HOLDS
        else:
            v = INCONCLUSIVE
        verdicts.append(v)
        name = f"V1 {size} vs {peer_arch}"
        named.append((name, v))
        accuracy = "; ".join(f"top-1 V1 - {peer_arch} [{row['hardware']}] {fmt_interval(row, unit=' pp')}"
                             for _, row in acc.iterrows()) or f"no runs of {peer_arch} beside V1 from scratch"
        bench_text = "; ".join(
            f"[{row.hardware}, {row.source}] train images/s {row.train_ratio:.2f}x (noise ±{row.noise:.2f}), "
            f"infer {row.infer_ratio:.2f}x, {_kept(row.memory_ratio)}" for row in g.itertuples())
        details.append(f"{name}: {v}: {accuracy}; {bench_text}")
        heads.append(f"{name}: train {g['train_ratio'].max():.2f}x, {_kept(g['memory_ratio'].min())}"
                     + (f", top-1 {_short(acc.iloc[0])}" if len(acc) else ""))
    verdict = overall(verdicts)
    heads.sort(key=lambda h: "top-1" not in h)  # the sizes with runs to compare accuracy first
    best = (f"largest V1 / peer train throughput {speed['train_ratio'].max():.2f}x (paper: up to 1.5x), largest "
            f"memory saving {100 * (1 - speed['memory_ratio'].min()):.0f}% (paper: 30%)")
    why = _why(verdict, named, {FAILS: "V1 is slower, keeps more for backward or scores lower than a peer",
                                HOLDS: "V1 is faster and leaner than every peer at similar accuracy"})
    return Finding(verdict, "; ".join(heads), why, best + ". " + " | ".join(details), rule)


def c9(runs, curves, bench, **_) -> Finding:
    rule = RULES["C9"].format(interval=INTERVAL_RULE)
    r = finished(runs, "e4")
    kernel = r.get("cfg.adapter.kernel", pd.Series(dtype=object)) if len(r) else pd.Series(dtype=object)
    kernels = sorted(set(kernel.dropna()) - {"bilinear"}) if len(r) else []
    if not kernels:
        absent = "no E4 run with another kernel than bilinear"
        return Finding(UNTESTABLE, absent, absent, absent, rule)
    base = r[r["variant"] == "base"]
    verdicts, named, heads, details = [], [], [], []
    for k in kernels:
        g = r[(kernel == k)]
        for ablation in sorted(set(g["variant"])):
            both = pd.concat([g[g["variant"] == ablation].assign(method=ablation), base.assign(method="base")])
            p = paired(both, "acc1", ablation, "base", ["hardware", "backbone"])
            for _, row in p.iterrows():
                v = interval_verdict(row, 0.0, strict=True)
                verdicts.append(v)
                named.append((f"{k} [{row['hardware']}]", v))
                heads.append(f"{k} - bilinear {_short(row)}")
                share = g[g["variant"] == ablation].get("quadratic_share.end.median", pd.Series(dtype=float)).mean()
                details.append(f"{row['backbone']} [{row['hardware']}] {ablation} (kernel {k}): {v}: {k} - bilinear "
                               f"top-1 {fmt_interval(row, unit=' pp')}; its quadratic share at the end {share:.3f}")
    verdict = overall(verdicts)
    why = _why(verdict, named, {FAILS: "a kernel ends below the bilinear adapter",
                                HOLDS: "every kernel ends above the bilinear adapter"})
    return Finding(verdict, "; ".join(heads), why, "; ".join(details), rule)


# ---------------------------------------------------------------- A1-A2: the suite's own questions
def _times_text(mt: pd.DataFrame, row) -> str:
    """Each method's time to the scratch target in one group, and its savings against scratch."""
    t = mt[(mt["hardware"] == row["hardware"]) & (mt["backbone"] == row["backbone"]) & (mt["variant"] == row["variant"])]
    parts = []
    for r in t.itertuples():
        iv = {"n": r.savings_seed_n, "mean": r.savings_seed_mean, "lo": r.savings_lo, "hi": r.savings_hi}
        parts.append(f"{r.method} reached {r.target_acc1:.2f}% in {r.reached}/{r.seeds} seeds"
                     + (f" after {r.t_s:.1f} training device-s (savings vs scratch {pct(r.savings_to_target)}, "
                        f"paired {fmt_interval(iv, 1, 100, '%', '')})" if r.reached else ""))
    return "; ".join(parts)


def a1(runs, curves, bench, tolerance_pp=TOLERANCE_PP, **_) -> Finding:
    rule = RULES["A1"].format(controls=", ".join(CONTROLS), interval=INTERVAL_RULE)
    r = finished(runs, "e1")
    diffs = {c: paired(r, "acc1", "adapt", c, list(GROUP)) if len(r) else pd.DataFrame() for c in CONTROLS}
    diffs = {c: d for c, d in diffs.items() if len(d)}
    if not diffs:
        absent = "no E1 adapt runs beside a control from the same weights"
        return Finding(UNTESTABLE, absent, absent, absent, rule)
    mt = method_times(runs[runs["exp"] == "e1"], curves, tolerance_pp)
    groups = pd.concat([d[list(GROUP)] for d in diffs.values()]).drop_duplicates()
    verdicts, named, heads, details = [], [], [], []
    for _, g in groups.iterrows():
        rows = {c: d[(d["hardware"] == g["hardware"]) & (d["backbone"] == g["backbone"]) &
                     (d["variant"] == g["variant"])] for c, d in diffs.items()}
        rows = {c: x.iloc[0] for c, x in rows.items() if len(x)}
        each = {c: interval_verdict(x, 0.0, strict=True) for c, x in rows.items()}
        v = (FAILS if FAILS in each.values() else HOLDS if set(each.values()) == {HOLDS} and len(each) == len(CONTROLS)
             else FEW_SEEDS if FEW_SEEDS in each.values() else INCONCLUSIVE)
        verdicts.append(v)
        named.append((_name(g, groups), v))
        heads.append(f"{_name(g, groups)}: " + ", ".join(f"{SHORT.get(c, c)} {_short(x, unit='', digits=1)}"
                                                          .replace(", ", ",") for c, x in rows.items()))
        runs_g = r[(r["hardware"] == g["hardware"]) & (r["backbone"] == g["backbone"]) & (r["variant"] == g["variant"])]
        budget = budget_text(runs_g)
        details.append(f"{_name(g)}: {v}: adapt " + ", ".join(f"- {c} {fmt_interval(x, unit=' pp')}"
                                                               for c, x in rows.items())
                       + (f"; {budget}" if budget else "")
                       + (f"; times to target: {_times_text(mt, g)}" if len(mt) else ""))
    verdict = overall(verdicts)
    why = _why(verdict, named, {FAILS: "a control from the same weights ends higher than adaptation",
                                HOLDS: "adaptation beats every control from the same weights"})
    return Finding(verdict, "adapt minus (pp): " + "; ".join(heads), why, "; ".join(details), rule)


def a2(runs, curves, bench, **_) -> Finding:
    rule = RULES["A2"].format(interval=INTERVAL_RULE)
    r = finished(runs, "e1")
    r = r.drop_duplicates(["hardware", "backbone", "method", "seed", "run"]) if len(r) else r
    by = ["hardware", "backbone"]
    p = paired(r.drop_duplicates(["hardware", "backbone", "method", "seed"]), "acc1", "scratch", "fo_scratch", by) \
        if len(r) else pd.DataFrame()
    if p.empty:
        absent = "no quadratic and first-order runs from scratch side by side"
        return Finding(UNTESTABLE, absent, absent, absent, rule)
    v1 = paired(r.drop_duplicates(["hardware", "backbone", "method", "seed"]), "acc1", "v1_scratch", "fo_scratch", by)
    verdicts, named, heads, details = [], [], [], []
    for _, row in p.iterrows():
        v = interval_verdict(row, 0.0, strict=True)
        verdicts.append(v)
        name = row["backbone"] + (f" [{row['hardware']}]" if p["hardware"].nunique() > 1 else "")
        named.append((name, v))
        heads.append(f"{name}: {_short(row)}")
        w = v1[(v1["hardware"] == row["hardware"]) & (v1["backbone"] == row["backbone"])] if len(v1) else v1
        details.append(f"{row['backbone']} [{row['hardware']}]: {v}: quadratic - first-order from scratch "
                       f"{fmt_interval(row, unit=' pp')}" + (f"; QuadraNet V1 - first-order "
                                                            f"{fmt_interval(w.iloc[0], unit=' pp')}" if len(w) else ""))
    verdict = overall(verdicts)
    why = _why(verdict, named, {FAILS: "the quadratic network ends below the first-order one",
                                HOLDS: "the quadratic network ends above the first-order one"})
    return Finding(verdict, "quadratic - first-order from scratch: " + "; ".join(heads), why, "; ".join(details), rule)


CHECKS = {"C1": c1, "C2": c2, "C3": c3, "C4": c4, "C5": c5, "C6": c6, "C7": c7, "C8": c8, "C9": c9, "A1": a1,
          "A2": a2}


def evaluate_claims(runs, curves, bench, paper_file, scale: str, competitive_pp: float = 1.0,
                    tolerance_pp: float = TOLERANCE_PP, band: tuple = BAND) -> pd.DataFrame:
    """One row per claim: statement, paper value (headline and full), ours (headline and details), scale,
    verdict, why, rule. Each run counts once (`count_once`); the reproductions it set aside go to `scale`."""
    statements, numbers, headlines = load_paper(paper_file)
    runs, reproduced = count_once(runs)
    hardware = ", ".join(sorted(set(finished(runs)["hardware"]) | set(bench.get("hardware", [])))) or "none"
    scale_text = f"{scale} ({hardware})" + (f"; {'; '.join(reproduced)}" if reproduced else "")
    rows = []
    for cid, check in CHECKS.items():
        f = check(runs, curves, bench, competitive_pp=competitive_pp, tolerance_pp=tolerance_pp, band=tuple(band))
        rows.append({"claim": cid, "statement": statements.get(cid, OURS.get(cid, "")),
                     "paper_headline": headlines.get(cid, OURS_PAPER.get(cid, "")),
                     "paper": paper_value(numbers, cid) if cid in statements else OURS_PAPER.get(cid, ""),
                     "ours": f.ours, "details": f.details, "scale": scale_text, "verdict": f.verdict,
                     "why": f.why, "rule": f.rule})
    return pd.DataFrame(rows)


def _cell(text: str, limit: int = WHY_MAX) -> str:
    text = str(text)
    return text if len(text) <= limit else text[:limit - 3].rstrip() + "..."


def write_claims(claims: pd.DataFrame, out_md, out_csv=None) -> None:
    """claims.md: one table, one row per claim (no cell over 300 characters), then the details per claim;
    claims.csv beside it with every column."""
    summary = pd.DataFrame({"claim": claims["claim"], "paper": claims["paper_headline"].map(_cell),
                            "ours (95% interval)": claims["ours"].map(_cell), "verdict": claims["verdict"].map(_cell),
                            "why": claims["why"].map(_cell)})
    lines = ["# Claims of QuadraNet V2 (arXiv 2405.03192) and what this run measured", "",
             "C1-C9 are the paper's claims; A1-A2 are this suite's own questions beside them. Intervals: 95% "
             "Student-t over seeds, paired by seed; the rule of each verdict is in its section below.", "",
             to_markdown(summary), "", f"Scale: {claims['scale'].iloc[0]}", ""]
    for r in claims.itertuples():
        lines += [f"## {r.claim}: {r.verdict}", "", f"- Claim: {r.statement}", f"- Paper: {r.paper}",
                  f"- Ours: {r.details}", f"- Why: {r.why}", f"- Verdict rule: {r.rule or 'n/a'}", ""]
    lines.append("Verdicts are for this scale only; paper numbers we could not read stay empty "
                 "(workflow/paper_numbers.yaml).")
    atomic.write_text(out_md, "\n".join(lines) + "\n")
    atomic.write_text(out_csv or Path(out_md).with_suffix(".csv"), claims.to_csv(index=False))
