"""Does a rerun reproduce a committed reference? Table 1's top-1 per (backbone, setting, method), this machine's
runs against a reference folder's (results/reference/<hardware>/).

Bit-identical results need the same machine, seed and library versions (the same CPU kernels); on another CPU
the kernels round differently and runs drift apart within their seed spread. So the check is statistical: a row
is reproduced when this machine's mean top-1 over seeds lies inside the reference's 95% t-interval over seeds
(`stats.t_interval`); rows without an interval (one seed) are reported, not judged.
"""
from __future__ import annotations

import pandas as pd

from .stats import t_interval
from .tables import finished

KEYS = ("backbone", "variant", "method")
RULE = "reproduced = this machine's mean top-1 lies inside the reference's 95% t-interval over seeds"


def compare(runs: pd.DataFrame, reference: str, exp: str = "e1", value: str = "acc1") -> pd.DataFrame:
    """One row per (backbone, setting, method) that both this machine's runs and `reference` hold."""
    r = finished(runs, exp).drop_duplicates(["hardware", "run"])
    local = r[r["hardware"].astype(str).str.startswith("this machine")]
    ref = r[r["hardware"] == reference]
    if ref.empty:
        known = sorted(set(r["hardware"]) - set(local["hardware"]))
        raise ValueError(f"no {exp} runs of reference {reference!r}; references collected: {known}")
    rows = []
    for key, g in local.groupby(list(KEYS), sort=False):
        other = ref
        for k, v in zip(KEYS, key):
            other = other[other[k] == v]
        if other.empty:
            continue
        mine, theirs = t_interval(g[value]), t_interval(other[value])
        inside = theirs["lo"] <= mine["mean"] <= theirs["hi"] if theirs["n"] > 1 else None
        rows.append({**dict(zip(KEYS, key)), "seeds": mine["n"], "mean": mine["mean"], "reference_seeds": theirs["n"],
                     "reference_mean": theirs["mean"], "reference_lo": theirs["lo"], "reference_hi": theirs["hi"],
                     "reproduced": inside})
    return pd.DataFrame(rows)
