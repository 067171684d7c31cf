"""GPU-hour savings of adaptation over training from scratch, as the design's measurement rules define them.

savings = 1 - cost(adapt to reach the target accuracy) / cost(scratch to reach it), where cost is the
device-seconds of a run's own training and evaluation (log lines' `device_s`) at its first evaluation at or
above the target. The target is the highest top-1 accuracy that every run of both methods (all seeds)
reaches, so each run has a time to it; it is printed with the number. The first-order pretraining the
adaptation starts from is reported apart (the paper treats existing weights as free) and, where the
workflow made those weights itself, a second savings figure includes it.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

TARGET_RULE = "the highest top-1 accuracy that every {a} and {s} run (all seeds) reaches"
COST_RULE = "device-seconds (training + evaluation) at the first evaluation at or above the target"


def evals(curves: pd.DataFrame, run: str, hardware: str) -> pd.DataFrame:
    """Evaluation lines of one run, in order."""
    if curves.empty:
        return curves
    c = curves[(curves["run"] == run) & (curves["hardware"] == hardware) & (curves["event"] == "eval")]
    return c.dropna(subset=["acc1"]).sort_values("device_s", kind="stable")


def time_to_target(ev: pd.DataFrame, target: float) -> float:
    """device_s of the first evaluation with acc1 >= target (NaN when none reaches it)."""
    hit = ev[ev["acc1"] >= target - 1e-9]
    return float(hit["device_s"].iloc[0]) if len(hit) else math.nan


def savings(runs: pd.DataFrame, curves: pd.DataFrame, adapt: str = "adapt", scratch: str = "scratch",
            by: tuple = ("hardware", "exp", "backbone")) -> pd.DataFrame:
    """One row per group `by` holding both methods: target, times to it, savings (mean over seed pairs and
    of the mean times), and the pretraining cost with the savings that include it."""
    done = runs[(runs["status"] == "done") & runs["method"].isin([adapt, scratch])]
    cost = runs[runs["status"] == "done"].drop_duplicates(["hardware", "run"]).set_index(["hardware", "run"])["cost_s"]
    out = []
    for key, g in done.groupby(list(by), sort=False):
        if set(g["method"]) != {adapt, scratch}:
            continue
        hw = g["hardware"].iloc[0]
        curves_of = {r: evals(curves, r, hw) for r in g["run"]}
        best = [c["acc1"].max() for c in curves_of.values() if len(c)]
        if len(best) < len(g):
            continue  # a run without evaluation lines has no time to any target
        target = float(min(best))
        times = {m: g[g["method"] == m].set_index("seed")["run"].map(lambda r: time_to_target(curves_of[r], target))
                 for m in (adapt, scratch)}
        paired = (1 - times[adapt] / times[scratch]).dropna()
        pre = g[g["method"] == adapt]["pretrained_run"].dropna().unique()
        pre_s = float(sum(cost.get((hw, p), math.nan) for p in pre)) if len(pre) else math.nan
        t_a, t_s = times[adapt].mean(), times[scratch].mean()
        out.append({**dict(zip(by, key if isinstance(key, tuple) else (key,))),
                    "target_acc1": target, "target_rule": TARGET_RULE.format(a=adapt, s=scratch),
                    "cost_rule": COST_RULE, "seeds": int(len(paired)),
                    "t_adapt_s": t_a, "t_adapt_s_std": times[adapt].std(ddof=0),
                    "t_scratch_s": t_s, "t_scratch_s_std": times[scratch].std(ddof=0),
                    "savings": 1 - t_a / t_s, "savings_seed_mean": paired.mean() if len(paired) else math.nan,
                    "savings_seed_std": paired.std(ddof=0) if len(paired) else math.nan,
                    "pretrain_s": pre_s, "savings_incl_pretraining": 1 - (t_a + pre_s) / t_s,
                    "pretraining": "workflow (measured)" if len(pre) else "external weights (not measured)"})
    return pd.DataFrame(out)


def describe(row: pd.Series) -> str:
    """One line: the savings with its target and how it was chosen."""
    s = (f"savings {100 * row['savings']:.1f}% (per seed {100 * row['savings_seed_mean']:.1f} ± "
         f"{100 * row['savings_seed_std']:.1f}%, {row['seeds']} seeds) to reach {row['target_acc1']:.2f}% top-1 "
         f"({row['target_rule']}; cost = {row['cost_rule']})")
    if np.isfinite(row["pretrain_s"]):
        s += f"; pretraining {row['pretrain_s']:.0f} device-s, savings incl. pretraining {100 * row['savings_incl_pretraining']:.1f}%"
    return s
