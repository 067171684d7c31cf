"""Seed statistics of the report: Student-t intervals, paired differences by seed, binomial standard errors.

Every interval is a two-sided 95% Student-t interval over seeds: mean ± t_{0.975, n-1} * sd / sqrt(n), with the
sample standard deviation (ddof=1); fewer than 2 values give no interval (NaN bounds). The t quantile is
computed with the standard library only (closed-form t distribution for integer degrees of freedom, inverted
by bisection), so no statistics package is needed.
"""
from __future__ import annotations

import math
from typing import Iterable, Sequence

import pandas as pd

LEVEL = 0.95
INTERVAL_RULE = "95% Student-t interval over seeds (mean ± t_{0.975,n-1}·sd/√n, sd with n-1)"


def t_central(t: float, df: int) -> float:
    """P(|T| <= t) for Student's t with integer df (Abramowitz & Stegun 26.7.3 / 26.7.4)."""
    theta = math.atan(t / math.sqrt(df))
    c2, s = math.cos(theta) ** 2, math.sin(theta)
    if df % 2:  # odd: (2/pi) (theta + sin cos (1 + 2/3 cos^2 + 2*4/(3*5) cos^4 + ...)), last power df-3
        term, total = 1.0, 1.0 if df > 1 else 0.0
        for k in range(1, (df - 1) // 2):
            term *= c2 * (2 * k) / (2 * k + 1)
            total += term
        return 2 / math.pi * (theta + s * math.cos(theta) * total)
    term, total = 1.0, 1.0  # even: sin (1 + 1/2 cos^2 + 1*3/(2*4) cos^4 + ...), last power df-2
    for k in range(1, df // 2):
        term *= c2 * (2 * k - 1) / (2 * k)
        total += term
    return s * total


def t_quantile(level: float, df: int) -> float:
    """t with P(|T| <= t) = level (the two-sided quantile: t_quantile(0.95, 2) = 4.303)."""
    if df < 1 or not 0 < level < 1:
        raise ValueError(f"t quantile needs df >= 1 and 0 < level < 1, got df={df}, level={level}")
    lo, hi = 0.0, 1.0
    while t_central(hi, df) < level:
        hi *= 2
    for _ in range(100):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if t_central(mid, df) < level else (lo, mid)
    return (lo + hi) / 2


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
