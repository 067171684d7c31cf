"""Savings of adaptation over training from scratch: the one definition every table, figure and claim uses.

Rules, per group (hardware, exp, backbone, variant; in E1 the variant is the setting, intask or transfer):
- Target: T = mean over seeds of the final top-1 (`acc1`) of the `scratch` runs minus `tolerance_pp`
  (default 1.0 pp, printed with every number).
- Cost of a run at an evaluation, as the paper counts GPU-hours: training device-seconds from the first optimizer
  step (data loading inside), evaluation apart: the log line's `train_s` (runs before it was logged: `device_s`
  minus the evaluations so far, each timed as its line's `device_s` minus that of the line before it). So how
  often a run is evaluated moves no cost. The evaluation-inclusive cost (`device_s` minus the initial evaluation's)
  gives the secondary `*_with_eval` columns.
- Time to target: the cost at the run's first evaluation after training started (step > 0; the initial
  evaluation, step 0 / tag 'initial', never counts) with acc1 >= T; NaN when no evaluation reaches it.
- Seeds that miss: `<method>_reached` counts the seeds whose run reaches T (shown as n reached / n). A seed's
  paired savings need both runs to reach T; an adapt run that misses T makes C1 fail outright (it never gets
  there), a scratch run that misses leaves its seed out of the paired interval (stated with the count).
- start_meets_target: the adapt runs' mean start accuracy (`initial_acc1`) is already >= T; savings to such a
  target measure nothing about training.
- Converged baseline: a run's last-quarter gain is its last evaluation's top-1 minus that of the evaluation at
  or just before 75% of its steps; the scratch (fo_scratch) baseline is converged when the mean gain over seeds
  is < 0.5 pp.
- savings_to_target = 1 - mean t_adapt / mean t_scratch (means over the seeds that reach T); the paired
  per-seed savings 1 - t_adapt(k) / t_scratch(k) (seeds where both reach T) get a 95% t-interval (stats.py).
- Evaluation bracket: a run crosses T somewhere after the evaluation before the one that reaches it (`t_before`,
  0 for the first evaluation after training started) and at the latest at that one; evaluations every few epochs
  leave the true time to target inside that bracket. Per seed, the savings lie between the pessimistic
  1 - t_adapt / t_before_scratch and the optimistic 1 - t_before_adapt / t_scratch; each gets its 95% t-interval
  (savings_pessimistic_lo: lower bound of the pessimistic one; savings_optimistic_hi: upper bound of the
  optimistic one). A verdict on the savings stands only where it holds at both ends of the bracket.
- savings_full_schedule = 1 - mean train_s of whole adapt runs / that of whole scratch runs (`_with_eval`:
  cost_s, training and evaluation).
- method_times: the same time to target and savings against the scratch target for every method of a group
  (the controls finetune, lora, head included), one row per method.
- energy_savings_full_schedule = the same in energy (energy_kwh of whole runs, start-up included), with
  energy_savings_how: how both sides' energy was obtained ('estimated', 'measured', or 'mixed: ...': never mixed
  silently).
- savings_vs_fo_scratch = 1 - mean t_adapt / mean time of the fo_scratch runs to the same T.
- pretrain_s: mean over adapt runs of the training seconds of the run whose weights each starts from (`pretrained_run`;
  NaN for external weights); savings_incl_pretraining = 1 - (t_adapt + pretrain_s) / t_scratch.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from . import TOLERANCE_PP
from .stats import fmt_interval, t_interval

CONVERGED_GAIN_PP = 0.5
LAST_QUARTER_FROM = 0.75
GROUP = ("hardware", "exp", "backbone", "variant")
TARGET_RULE = "target = mean final top-1 of the {s} runs ({n} seeds) minus {tol:g} pp"
COST_RULE = ("time to target = training device-seconds (evaluation apart) from the first optimizer step to the "
             "first evaluation after step 0 at or above the target")
CONVERGED_RULE = (f"converged = mean gain over seeds of the last quarter of the schedule (last evaluation minus the "
                  f"one at or before {LAST_QUARTER_FROM:.0%} of the steps) < {CONVERGED_GAIN_PP:g} pp")
EMPTY = pd.DataFrame(columns=["step", "acc1", "cost", "initial"])


def train_seconds(log: pd.DataFrame) -> pd.Series:
    """Training device-seconds at each line of one run's log (in log order): `train_s` where logged, else `device_s`
    minus the evaluations so far, each timed as its line's `device_s` minus that of the line before it."""
    if "train_s" in log and log["train_s"].notna().all():
        return log["train_s"].astype(float)
    is_eval = (log["event"] == "eval").to_numpy()
    t = log["device_s"].astype(float)
    before = t.where(~is_eval).shift(1).ffill().fillna(0.0)  # device_s of the last line that is not an evaluation
    spent = (t - before).where(is_eval, 0.0).clip(lower=0.0)
    return t - spent.cumsum()


def eval_lines(curves: pd.DataFrame) -> dict:
    """(hardware, run) -> its evaluation lines ordered by step, with `initial` (tag 'initial' or step 0), `cost`
    (training device-seconds since the first optimizer step) and `cost_with_eval` (device_s minus the initial
    evaluation's)."""
    if curves.empty or "acc1" not in curves:
        return {}
    c = curves[curves["event"].isin(["eval", "step", "epoch"])]
    tag = c["tag"] if "tag" in c else pd.Series(None, index=c.index, dtype=object)
    c = c.assign(initial=(c["event"] == "eval") & ((tag == "initial") | (c["step"] <= 0)))
    out = {}
    for key, g in c.groupby(["hardware", "run"], sort=False):
        g = g.assign(cost=train_seconds(g))
        g = g[(g["event"] == "eval") & g["acc1"].notna()].sort_values(["step", "device_s"], kind="stable")
        base = g.loc[g["initial"], "device_s"].min() if g["initial"].any() else 0.0
        out[key] = g.assign(cost_with_eval=g["device_s"] - base)
    return out


def time_to_target(ev: pd.DataFrame, target: float, cost: str = "cost") -> float:
    """Cost at the first evaluation after training started with acc1 >= target (NaN when none reaches it)."""
    return bracket(ev, target, cost)[1]


def bracket(ev: pd.DataFrame, target: float, cost: str = "cost") -> tuple:
    """(cost at the evaluation before the one that reaches `target`, 0 when it is the first after training
    started; cost at the one that reaches it): the true time to target lies in between. (NaN, NaN) when none
    reaches it."""
    after = ev[~ev["initial"].astype(bool)]
    hit = (after["acc1"] >= target - 1e-9).to_numpy()
    if not hit.any():
        return math.nan, math.nan
    i = int(hit.argmax())
    return (float(after[cost].iloc[i - 1]) if i > 0 else 0.0), float(after[cost].iloc[i])


def last_quarter_gain(ev: pd.DataFrame) -> float:
    """Top-1 of the last evaluation minus that of the one at or just before 75% of the run's steps (pp)."""
    if ev.empty or ev["step"].max() <= 0:
        return math.nan
    ref = ev[ev["step"] <= LAST_QUARTER_FROM * ev["step"].max()]
    return float(ev["acc1"].iloc[-1] - ref["acc1"].iloc[-1])


def _mean(s: pd.Series) -> float:
    s = s.dropna()
    return float(s.mean()) if len(s) else math.nan


def _energy(runs: pd.DataFrame) -> tuple[float, set]:
    """(mean energy_kwh, how it was obtained: the set of 'measured' / 'estimated') of runs (NaN, {} without)."""
    kwh = runs["energy_kwh"].astype(float) if "energy_kwh" in runs else pd.Series(dtype=float)
    src = runs["energy_source"] if "energy_source" in runs else pd.Series(dtype=object)
    how = {s.split(":")[0] for s in src.dropna() if isinstance(s, str) and not s.startswith("unavailable")}
    return _mean(kwh), how


def _energy_fields(of: dict, adapt: str, scratch: str) -> dict:
    (e_a, how_a), (e_s, how_s) = _energy(of[adapt]), _energy(of[scratch])
    how = how_a | how_s
    saved = 1 - e_a / e_s if e_s > 0 else math.nan  # NaN without energy on both sides
    return {"energy_adapt_kwh": e_a, "energy_scratch_kwh": e_s, "energy_savings_full_schedule": saved,
            "energy_savings_how": "" if not how else how.pop() if len(how) == 1 else
            f"mixed: adapt {sorted(how_a)}, scratch {sorted(how_s)}"}


def _times(of: dict, lines: dict, hw: str, target: float, cost: str = "cost") -> dict:
    """method -> (time to target per seed, cost at the evaluation before it per seed), NaN where missed."""
    out = {}
    for m, d in of.items():
        br = {k: bracket(lines.get((hw, r), EMPTY), target, cost) for k, r in d["run"].items()}
        out[m] = (pd.Series({k: hi for k, (_, hi) in br.items()}, dtype=float),
                  pd.Series({k: lo for k, (lo, _) in br.items()}, dtype=float))
    return out


def _of(g: pd.DataFrame, methods) -> dict:
    """method -> its runs of group `g` indexed by seed (one per seed)."""
    return {m: g[g["method"] == m].drop_duplicates("seed").set_index("seed") for m in methods}


def _col(d: pd.DataFrame, name: str) -> pd.Series:
    return d[name].astype(float) if name in d else pd.Series(math.nan, index=d.index)


def _group(g: pd.DataFrame, lines: dict, cost: pd.Series, tolerance_pp: float, adapt: str, scratch: str,
           fo: str) -> dict:
    """The savings columns of one group holding adapt and scratch runs."""
    hw = g["hardware"].iloc[0]
    of = _of(g, (adapt, scratch, fo))
    ev = {m: {seed: lines.get((hw, r), EMPTY) for seed, r in d["run"].items()} for m, d in of.items()}
    target = float(of[scratch]["acc1"].mean()) - tolerance_pp
    times = _times(of, lines, hw, target)
    t = {m: hi for m, (hi, _) in times.items()}
    before = {m: lo for m, (_, lo) in times.items()}
    t_eval = {m: hi for m, (hi, _) in _times(of, lines, hw, target, "cost_with_eval").items()}
    gain = {m: _mean(pd.Series([last_quarter_gain(x) for x in ev[m].values()], dtype=float)) for m in (scratch, fo)}
    per_seed = 1 - t[adapt] / t[scratch]
    iv = t_interval(per_seed.dropna())
    iv_eval = t_interval((1 - t_eval[adapt] / t_eval[scratch]).dropna())
    with np.errstate(divide="ignore"):  # a scratch run that reaches T at its first evaluation: no pessimistic end
        pessimistic = (1 - t[adapt] / before[scratch]).replace(-np.inf, np.nan)
    optimistic = 1 - before[adapt] / t[scratch]
    iv_pess, iv_opt = t_interval(pessimistic.dropna()), t_interval(optimistic.dropna())
    if pessimistic.isna().sum() > per_seed.isna().sum():  # some seed's pessimistic end is unbounded
        iv_pess = {**iv_pess, "mean": -math.inf, "lo": -math.inf}
    pre = of[adapt]["pretrained_run"].map(lambda p: cost.get((hw, p), math.nan) if isinstance(p, str) else math.nan)
    pre_s, t_a, t_s, t_f = _mean(pre.astype(float)), _mean(t[adapt]), _mean(t[scratch]), _mean(t[fo])
    start = _mean(of[adapt]["initial_acc1"]) if "initial_acc1" in g else math.nan
    train = {m: _mean(_col(d, "train_s")) for m, d in of.items()}
    return {
        "target_acc1": target, "tolerance_pp": tolerance_pp,
        "target_rule": TARGET_RULE.format(s=scratch, n=len(of[scratch]), tol=tolerance_pp), "cost_rule": COST_RULE,
        "converged": bool(gain[scratch] < CONVERGED_GAIN_PP), "scratch_last_quarter_gain_pp": gain[scratch],
        "fo_scratch_converged": bool(gain[fo] < CONVERGED_GAIN_PP), "fo_scratch_last_quarter_gain_pp": gain[fo],
        "start_acc1": start, "start_meets_target": bool(start >= target - 1e-9),
        "seeds": len(of[adapt]), "scratch_seeds": len(of[scratch]), "adapt_reached": int(t[adapt].notna().sum()),
        "scratch_reached": int(t[scratch].notna().sum()), "fo_scratch_reached": int(t[fo].notna().sum()),
        "t_adapt_s": t_a, "t_adapt_s_std": t[adapt].std(ddof=0), "t_adapt_s_seeds": t[adapt].round(3).tolist(),
        "t_scratch_s": t_s, "t_scratch_s_std": t[scratch].std(ddof=0),
        "t_scratch_s_seeds": t[scratch].round(3).tolist(), "t_fo_scratch_s": t_f,
        "savings_to_target": 1 - t_a / t_s, "savings_seed_mean": iv["mean"], "savings_seed_sd": iv["sd"],
        "savings_seed_n": iv["n"], "savings_lo": iv["lo"], "savings_hi": iv["hi"],
        "t_adapt_before_s_seeds": before[adapt].round(3).tolist(),
        "t_scratch_before_s_seeds": before[scratch].round(3).tolist(),
        "savings_pessimistic": iv_pess["mean"], "savings_pessimistic_lo": iv_pess["lo"],
        "savings_optimistic": iv_opt["mean"], "savings_optimistic_hi": iv_opt["hi"],
        "savings_full_schedule": 1 - train[adapt] / train[scratch],
        "t_adapt_with_eval_s": _mean(t_eval[adapt]), "t_scratch_with_eval_s": _mean(t_eval[scratch]),
        "savings_to_target_with_eval": 1 - _mean(t_eval[adapt]) / _mean(t_eval[scratch]),
        "savings_with_eval_lo": iv_eval["lo"], "savings_with_eval_hi": iv_eval["hi"],
        "savings_full_schedule_with_eval": 1 - _mean(of[adapt]["cost_s"]) / _mean(of[scratch]["cost_s"]),
        "savings_vs_fo_scratch": 1 - t_a / t_f, "pretrain_s": pre_s,
        "savings_incl_pretraining": 1 - (t_a + pre_s) / t_s,
        "pretraining": "workflow (measured)" if pre.notna().any() else "external weights (not measured)",
        **_energy_fields(of, adapt, scratch),
    }


def savings(runs: pd.DataFrame, curves: pd.DataFrame, tolerance_pp: float = TOLERANCE_PP, adapt: str = "adapt",
            scratch: str = "scratch", fo: str = "fo_scratch", by: tuple = GROUP) -> pd.DataFrame:
    """One row per group `by` holding finished adapt and scratch runs (the rules in the module docstring)."""
    if runs.empty or "status" not in runs:
        return pd.DataFrame()
    done = runs[runs["status"] == "done"]
    cost = _col(done.drop_duplicates(["hardware", "run"]).set_index(["hardware", "run"]), "train_s")
    lines = eval_lines(curves)
    out = []
    for key, g in done[done["method"].isin([adapt, scratch, fo])].groupby(list(by), sort=False):
        if {adapt, scratch} <= set(g["method"]):
            key = key if isinstance(key, tuple) else (key,)
            out.append({**dict(zip(by, key)), **_group(g, lines, cost, tolerance_pp, adapt, scratch, fo)})
    return pd.DataFrame(out)


def method_times(runs: pd.DataFrame, curves: pd.DataFrame, tolerance_pp: float = TOLERANCE_PP,
                 scratch: str = "scratch", by: tuple = GROUP) -> pd.DataFrame:
    """One row per group and method: the scratch target, seeds reaching it (n reached / seeds), mean time to
    target (training device-seconds), savings against scratch (1 - mean t / mean t_scratch) with the interval of
    the paired per-seed savings, the mean training and evaluation seconds and data wait of whole runs."""
    if runs.empty or "status" not in runs:
        return pd.DataFrame()
    done = runs[runs["status"] == "done"]
    lines = eval_lines(curves)
    out = []
    for key, g in done.groupby(list(by), sort=False):
        if scratch not in set(g["method"]):
            continue
        key = key if isinstance(key, tuple) else (key,)
        hw = g["hardware"].iloc[0]
        of = _of(g, list(dict.fromkeys(g["method"])))
        target = float(of[scratch]["acc1"].mean()) - tolerance_pp
        times = _times(of, lines, hw, target)
        t_s = times[scratch][0]
        for m, d in of.items():
            t, before = times[m]
            iv = t_interval((1 - t / t_s).dropna())
            out.append({**dict(zip(by, key)), "method": m, "target_acc1": target, "seeds": len(d),
                        "reached": int(t.notna().sum()), "t_s": _mean(t), "t_before_s": _mean(before),
                        "savings_to_target": 1 - _mean(t) / _mean(t_s), "savings_seed_mean": iv["mean"],
                        "savings_lo": iv["lo"], "savings_hi": iv["hi"], "savings_seed_n": iv["n"],
                        "train_s": _mean(_col(d, "train_s")), "eval_s": _mean(_col(d, "eval_s")),
                        "data_wait_s": _mean(_col(d, "data_wait_s"))})
    return pd.DataFrame(out)


def pct(v: float) -> str:
    if pd.notna(v) and v == -math.inf:
        return "unbounded below"
    return f"{100 * v:.1f}%" if pd.notna(v) and math.isfinite(v) else "n/a"


def describe(row) -> str:
    """One line: savings to the target (training seconds) with its interval, the target and its rule, the
    convergence check, then the secondary views."""
    iv = {"n": row["savings_seed_n"], "mean": row["savings_seed_mean"], "lo": row["savings_lo"],
          "hi": row["savings_hi"]}
    s = (f"savings to target {pct(row['savings_to_target'])} in training device-seconds (paired per seed "
         f"{fmt_interval(iv, 1, 100, '%', '')}, 95% t) "
         f"to reach {row['target_acc1']:.2f}% top-1 ({row['target_rule']}); adapt reached it in "
         f"{row['adapt_reached']}/{row['seeds']} seeds, scratch in {row['scratch_reached']}/"
         f"{row.get('scratch_seeds', row['seeds'])}; "
         f"start top-1 {row['start_acc1']:.2f}%{' (already meets the target)' if row['start_meets_target'] else ''}; "
         f"scratch {'converged' if row['converged'] else 'NOT converged'} (last-quarter gain "
         f"{row['scratch_last_quarter_gain_pp']:+.2f} pp); full-schedule savings {pct(row['savings_full_schedule'])}; "
         f"vs fo_scratch {pct(row['savings_vs_fo_scratch'])}")
    if pd.notna(row.get("savings_optimistic", math.nan)):
        s += (f"; bracketed by the evaluations, the savings lie between {pct(row['savings_pessimistic'])} and "
              f"{pct(row['savings_optimistic'])} (95% t: pessimistic lower bound {pct(row['savings_pessimistic_lo'])}, "
              f"optimistic upper bound {pct(row['savings_optimistic_hi'])})")
    if pd.notna(row.get("savings_to_target_with_eval", math.nan)):
        s += (f"; counting evaluation too: savings to target {pct(row['savings_to_target_with_eval'])}, full "
              f"schedule {pct(row['savings_full_schedule_with_eval'])}")
    if pd.notna(row["pretrain_s"]):
        s += (f"; pretraining {row['pretrain_s']:.0f} device-s, savings incl. pretraining "
              f"{pct(row['savings_incl_pretraining'])}")
    if pd.notna(row.get("energy_savings_full_schedule", math.nan)):
        s += (f"; energy (ours, {row['energy_savings_how']}): adapt {1000 * row['energy_adapt_kwh']:.3g} Wh vs "
              f"scratch {1000 * row['energy_scratch_kwh']:.3g} Wh per run, full-schedule energy savings "
              f"{pct(row['energy_savings_full_schedule'])}")
    return s
