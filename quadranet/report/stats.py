"""Seed statistics of the report: Student-t intervals, paired differences by seed, binomial standard errors.

Every interval is a two-sided 95% Student-t interval over seeds: mean ± t_{0.975, n-1} * sd / sqrt(n), with the
sample standard deviation (ddof=1), the quantile from scipy.stats; fewer than 2 values give no interval (NaN
bounds).
"""
from __future__ import annotations

import math
from typing import Iterable, Sequence

import pandas as pd
from scipy import stats

LEVEL = 0.95
INTERVAL_RULE = "95% Student-t interval over seeds (mean ± t_{0.975,n-1}·sd/√n, sd with n-1)"


def t_quantile(level: float, df: int) -> float:
    """t with P(|T| <= t) = level (the two-sided quantile: t_quantile(0.95, 2) = 4.303)."""
    if df < 1 or not 0 < level < 1:
        raise ValueError(f"t quantile needs df >= 1 and 0 < level < 1, got df={df}, level={level}")
    return float(stats.t.ppf((1 + level) / 2, df))


def t_interval(values: Iterable[float], level: float = LEVEL) -> dict:
    """n, mean, sd (ddof=1), half-width and bounds of the t-interval of the finite values."""
    v = [float(x) for x in values if x is not None and math.isfinite(x)]
    n = len(v)
    mean = sum(v) / n if n else math.nan
    sd = math.sqrt(sum((x - mean) ** 2 for x in v) / (n - 1)) if n > 1 else math.nan
    half = t_quantile(level, n - 1) * sd / math.sqrt(n) if n > 1 else math.nan
    return {"n": n, "mean": mean, "sd": sd, "half": half, "lo": mean - half, "hi": mean + half}


def paired(runs: pd.DataFrame, value: str, a: str, b: str, by: Sequence[str]) -> pd.DataFrame:
    """Per group `by`: the t-interval of `value`(a) - `value`(b), paired by seed (seeds with both only);
    columns by..., n, mean, sd, half, lo, hi, diffs (the per-seed differences, seed order)."""
    r = runs[runs["method"].isin([a, b])].dropna(subset=[value])
    if r.empty:
        return pd.DataFrame()
    p = r.pivot_table(index=[*by, "seed"], columns="method", values=value, aggfunc="mean")
    if a not in p or b not in p:
        return pd.DataFrame()
    d = (p[a] - p[b]).dropna().rename("diff").reset_index()
    rows = [{**dict(zip(by, key if isinstance(key, tuple) else (key,))), **t_interval(g["diff"]),
             "diffs": g["diff"].tolist()} for key, g in d.groupby(list(by), sort=False)]
    return pd.DataFrame(rows)


def binomial_se(acc_pct: float, n: float) -> float:
    """Standard error (pp) of a top-1 accuracy measured on n images: 100 sqrt(p (1 - p) / n)."""
    if not n or not math.isfinite(n) or not math.isfinite(acc_pct):
        return math.nan
    p = acc_pct / 100
    return 100 * math.sqrt(p * (1 - p) / n)


def fmt_interval(iv, digits: int = 2, scale: float = 1.0, unit: str = "", sign: str = "+") -> str:
    """'+1.20 [+0.40, +2.00] pp (n=3)' from a t_interval dict or row (values times `scale`, `sign` '+' or '');
    '(n=1: no interval)' below 2 values."""
    n = int(iv["n"])
    f = f"{{:{sign}.{digits}f}}".format
    if n < 2:
        return f"{f(scale * iv['mean']) if n else 'n/a'}{unit} (n={n}: no interval)"
    return f"{f(scale * iv['mean'])} [{f(scale * iv['lo'])}, {f(scale * iv['hi'])}]{unit} (n={n})"
