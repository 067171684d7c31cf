"""The seven figures (PNG + PDF), from collected runs; error bars are ± 1 s.d. over seeds (sample s.d.) wherever a
point has two or more seeds.

    fig1_linear_vs_nonlinear   E3: top-1 before and after adaptation per shift, linear shifts first (paper Fig. 1);
                               accuracy against strength where a shift was run at several strengths
    fig2_pretraining_scale     E2: top-1 and training device-seconds vs the size of the pretraining set (paper Fig. 2)
    fig3_adaptation_capacity   E3: accuracy recovered by each adaptation method per shift (paper Fig. 3)
    fig4_architecture          one block of the first-order, QuadraNet V1 and V2-adapted models, drawn from
                               the modules timm and quadranet build, and below, measured: top-1 from scratch
                               against train throughput and memory kept for backward of those networks and the
                               high-order peers HorNet, GFNet, FocalNet at one size (paper Fig. 4; claim C8)
    fig5_stage_training        stage 1 (first-order pretraining) then stage 2 (quadratic adaptation), and the
                               two-stage runs' curves, in training device-seconds (paper Fig. 5)
    fig6_accuracy_vs_cost      E1: top-1 vs training device-seconds (log axis), one panel per reference, backbone and
                               setting, the target and each method's time to it (n reached / n seeds)
    fig7_efficiency            E5: train-step time relative to first-order, memory kept for backward
One colour (and marker) per method in every figure (METHOD_COLORS); references (hardware labels) are told apart by
panel (figs 1, 3, 5, 6), line style (fig 2) or row label (fig 7); one legend per figure, below the panels. Each run is
drawn once (`collect.count_once`).
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Optional

import matplotlib

matplotlib.use("Agg")
import matplotlib.patches  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import matplotlib.transforms  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402

from ..data.shifts import LINEAR_SHIFTS  # noqa: E402
from . import FIGURES, TOLERANCE_PP  # noqa: E402
from .collect import count_once  # noqa: E402
from .savings import eval_lines, method_times, savings, train_seconds  # noqa: E402
from .tables import finished  # noqa: E402

STYLES = ("-", "--", ":", "-.")
LINEAR = LINEAR_SHIFTS
ERRORS = "error bars: ± 1 s.d. over seeds"
METHOD_ORDER = ("adapt", "adapt_rbf", "finetune", "lora", "head", "scratch", "fo_scratch", "v1_scratch")
METHOD_COLORS = {"adapt": "#d62728", "adapt_rbf": "#fdae6b", "finetune": "#1f77b4", "lora": "#2ca02c",
                 "head": "#9467bd", "scratch": "#ff7f0e", "fo_scratch": "#8c564b", "v1_scratch": "#e377c2",
                 "first_order": "#17becf", "before": "#7f7f7f"}
METHOD_MARKERS = {"adapt": "o", "adapt_rbf": "d", "finetune": "s", "lora": "^", "head": "v", "scratch": "D",
                  "fo_scratch": "X", "v1_scratch": "P", "first_order": "h", "before": "o"}
METHOD_LABELS = {"adapt": "V2 adaptation (quadratic)", "adapt_rbf": "V2 adaptation, rbf kernel",
                 "finetune": "first-order finetune", "lora": "LoRA adapter",
                 "head": "head only (control)", "scratch": "quadratic from scratch",
                 "fo_scratch": "first-order from scratch", "v1_scratch": "QuadraNet V1 from scratch",
                 "first_order": "first-order pretraining (stage 1)", "before": "before adaptation (zero-shot)"}
SHORT = {"adapt": "V2 adapt", "adapt_rbf": "V2 adapt (rbf)", "finetune": "finetune", "lora": "LoRA",
         "head": "head only", "scratch": "quad. scratch", "fo_scratch": "1st-order scratch", "v1_scratch": "V1 scratch"}
# E5 bench variants in the colour of the method they stand for (the adapter's implementations in shades of it)
VARIANT_HATCH = {"adapted_autograd": "////"}
RUNTIMES = ("eager", "onnxruntime", "openvino")
VARIANT_COLORS = {"first_order": METHOD_COLORS["fo_scratch"], "adapted": METHOD_COLORS["adapt"],
                  "adapted_frozen": "#fb6a4a", "adapted_memeff": "#67000d", "adapted_autograd": "#fcbba1",
                  "lora": METHOD_COLORS["lora"], "lora_frozen": "#98df8a", "lora_merged": "#006d2c",
                  "adapted_rbf": "#fdae6b", "adapted_rbf_in": "#e6550d",
                  "v1": METHOD_COLORS["v1_scratch"], "hornet": "#bcbd22", "gfnet": "#393b79", "focalnet": "#637939"}
PEER_LABELS = {"hornet": "HorNet (gnConv)", "gfnet": "GFNet (global filter)", "focalnet": "FocalNet (focal modulation)"}


def _color(method: str) -> str:
    return METHOD_COLORS.get(method, "black")


def _marker(method: str) -> str:
    return METHOD_MARKERS.get(method, "o")


def _rank(method: str) -> tuple:
    return (METHOD_ORDER.index(method) if method in METHOD_ORDER else len(METHOD_ORDER), method)


def _order(methods) -> list:
    return sorted(set(methods), key=_rank)


def _short_hw(labels) -> dict:
    """hardware label -> a short name: the labels less their common prefix (cut at a separator), or themselves."""
    labels = sorted(set(labels))
    if len(labels) < 2:
        return {h: h for h in labels}
    prefix = os.path.commonprefix(labels)
    cut = max(prefix.rfind(c) for c in "-_ (") + 1
    short = {h: h[cut:].strip(" ()") or h for h in labels}
    return short if len(set(short.values())) == len(labels) else {h: h for h in labels}


def _style(hw: str, hws: list) -> str:
    return STYLES[sorted(hws).index(hw) % len(STYLES)]


def _empty(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", wrap=True, transform=ax.transAxes, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])


def _method_handles(methods, line: bool = True) -> list:
    return [Line2D([], [], color=_color(m), marker=_marker(m), ls="-" if line else "none",
                   label=METHOD_LABELS.get(m, m), mfc="white" if m == "before" else _color(m)) for m in methods]


def _seeds(df: pd.DataFrame, by: list) -> str:
    """'n seeds' (or 'a-b seeds') per group `by`."""
    n = df.groupby(by)["seed"].nunique() if len(df) and "seed" in df else pd.Series(dtype=int)
    if n.empty:
        return "no seeds"
    return f"{n.min()} seeds" if n.min() == n.max() else f"{n.min()}-{n.max()} seeds"


def _hw_handles(hws: list) -> list:
    """Line-style keys of the references, only when there are several."""
    if len(hws) < 2:
        return []
    short = _short_hw(hws)
    return [Line2D([], [], color="black", ls=_style(h, hws), label=f"reference {short[h]}") for h in sorted(hws)]


def _legend(fig, handles: list, ncol: int = 4) -> None:
    """One legend for the whole figure, below the panels (never over the data or the axis labels)."""
    if handles:
        fig.legend(handles=handles, loc="outside lower center", ncol=min(ncol, len(handles)), fontsize=8,
                   frameon=False)


def _hw_title(hws) -> str:
    hws = sorted(set(hws))
    return f"[{hws[0]}]" if len(hws) == 1 else f"[references: {', '.join(_short_hw(hws).values())}]"


def _sd(s: pd.Series) -> float:
    """Sample s.d. over seeds; 0 (no bar) with one seed."""
    s = s.dropna()
    return float(s.std(ddof=1)) if len(s) > 1 else 0.0


def save(fig, out_dir, name: str) -> None:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if fig.get_layout_engine() is None:
        fig.tight_layout()
    for ext in ("png", "pdf"):
        fig.savefig(out_dir / f"{name}.{ext}", dpi=150)
    plt.close(fig)


def _log_lines(curves: pd.DataFrame, keys) -> dict:
    """(hardware, run) -> its evaluation lines (savings.eval_lines: `cost` = training device-seconds)."""
    if curves.empty or "run" not in curves:
        return {}
    keys = set(keys)
    c = curves[[k in keys for k in zip(curves["hardware"], curves["run"])]]
    return eval_lines(c) if len(c) else {}


def eval_stats(g: pd.DataFrame, lines: dict) -> pd.DataFrame:
    """The evaluations of runs `g` (seeds) averaged per step: x = training device-seconds, y = top-1 (± s.d.), n,
    initial (the evaluation before training), stage."""
    frames = [lines[k] for k in zip(g["hardware"], g["run"]) if k in lines]
    if not frames:
        return pd.DataFrame(columns=["step", "x", "y", "y_sd", "n", "initial", "stage"])
    c = pd.concat(frames, ignore_index=True)
    c = c.assign(stage=c["stage"] if "stage" in c else 0)
    s = c.groupby("step").agg(x=("cost", "mean"), y=("acc1", "mean"), y_sd=("acc1", "std"), n=("acc1", "size"),
                              initial=("initial", "all"), stage=("stage", "max")).reset_index()
    return s.assign(y_sd=s["y_sd"].fillna(0.0))


def curve_stats(runs: pd.DataFrame, curves: pd.DataFrame, event: str = "eval", y: str = "acc1") -> pd.DataFrame:
    """The `event` lines of runs (seeds) averaged per step: x = training device-seconds (savings.train_seconds),
    y mean and s.d., n, stage."""
    if curves.empty or runs.empty or y not in curves:
        return pd.DataFrame()
    frames, keys = [], set(zip(runs["hardware"], runs["run"]))
    for key, log in curves.groupby(["hardware", "run"], sort=False):
        if key in keys:
            log = log[log["event"].isin(["eval", "step", "epoch"])]
            frames.append(log.assign(x=train_seconds(log).to_numpy()))
    if not frames:
        return pd.DataFrame()
    c = pd.concat(frames, ignore_index=True)
    c = c[(c["event"] == event) & c[y].notna()]
    c = c.assign(stage=c["stage"] if "stage" in c else 0)
    g = c.groupby("step")
    return pd.DataFrame({"x": g["x"].mean(), "y": g[y].mean(), "y_sd": g[y].std().fillna(0.0), "n": g.size(),
                         "stage": g["stage"].max()}).reset_index()


# ---------------------------------------------------------------- E3
def _e3(runs: pd.DataFrame) -> pd.DataFrame:
    r = finished(runs, "e3")
    if r.empty:
        return r
    return r.assign(shift=r["cfg.data.shift"], strength=r["cfg.data.shift_strength"].astype(float),
                    recovered=r["acc1"] - r["initial_acc1"])


def _shift_points(r: pd.DataFrame) -> list:
    """(shift, strength) pairs, linear shifts first."""
    return sorted(set(zip(r["shift"], r["strength"])), key=lambda p: (p[0] not in LINEAR, p[0], p[1]))


def _zero_shot(g: pd.DataFrame) -> pd.Series:
    """Top-1 before adaptation, once per seed (every method of a seed starts from the same model)."""
    return g.drop_duplicates(["seed", "initial_acc1"])["initial_acc1"]


def _e3_axes(r: pd.DataFrame, ncols: int, width: float, height: float):
    """One panel row per reference (hardware), `ncols` panels each; the rows' references."""
    hws = sorted(r["hardware"].unique()) if len(r) else []
    nrows = max(len(hws), 1)
    fig, axes = plt.subplots(nrows, max(ncols, 1), figsize=(width * max(ncols, 1), height * nrows + 0.9),
                             squeeze=False, sharey=True, layout="constrained")
    return fig, axes, hws


def _linear_bands(ax, points: list) -> None:
    """Shade the linear shifts and name both groups above the panel."""
    n_lin = sum(s in LINEAR for s, _ in points)
    tr = matplotlib.transforms.blended_transform_factory(ax.transData, ax.transAxes)
    if n_lin:
        ax.axvspan(-0.5, n_lin - 0.5, color="#eeeeee", zorder=0)
        ax.text((n_lin - 1) / 2, 0.98, "linear shifts", transform=tr, ha="center", va="top", fontsize=8)
    if n_lin < len(points):
        ax.text((n_lin + len(points) - 1) / 2, 0.98, "nonlinear shifts", transform=tr, ha="center", va="top",
                fontsize=8)
    ax.set_xticks(range(len(points)), [f"{s}\nstrength {v:g}" for s, v in points], fontsize=8)
    ax.set_xlim(-0.5, len(points) - 0.5)


def _headroom(axes) -> None:
    """Room above the data for the group names (after every panel is drawn: the rows share their y axis)."""
    for ax in axes.flat:
        lo, hi = ax.get_ylim()
        ax.set_ylim(lo, hi + 0.12 * (hi - lo))


def _dots(ax, sub: pd.DataFrame, points: list, methods: list, col: str, before: bool) -> None:
    """Per shift point: the mean of `col` per method (± s.d. over seeds), side by side; the zero-shot first."""
    keys = (["before"] if before else []) + methods
    width = 0.7 / len(keys)
    for j, m in enumerate(keys):
        xs, ys, es = [], [], []
        for i, (s, v) in enumerate(points):
            g = sub[(sub["shift"] == s) & (sub["strength"] == v)]
            vals = _zero_shot(g) if m == "before" else g[g["method"] == m][col]
            if len(vals.dropna()):
                xs.append(i + (j - (len(keys) - 1) / 2) * width)
                ys.append(vals.mean())
                es.append(_sd(vals))
        ax.errorbar(xs, ys, yerr=es, color=_color(m), marker=_marker(m), ls="none", capsize=3, ms=6,
                    mfc="white" if m == "before" else _color(m))


def fig1_linear_vs_nonlinear(runs, curves, bench, ax_size=3.2, **_):
    r = _e3(runs)
    methods = _order(r["method"]) if len(r) else []
    several = len(r) and r.groupby("shift")["strength"].nunique().max() > 1
    shifts = sorted(r["shift"].unique(), key=lambda s: (s not in LINEAR, s)) if several else []
    fig, axes, hws = _e3_axes(r, len(shifts) if several else 1, ax_size if several else 7.5, ax_size + 0.4)
    if r.empty:
        _empty(axes[0, 0], "E3 not run at this scale")
        return fig
    for row, hw in zip(axes, hws):
        sub = r[r["hardware"] == hw]
        if not several:  # one calibrated strength per shift: no strength axis, one column of points per shift
            points = _shift_points(sub)
            _dots(row[0], sub, points, methods, "acc1", before=True)
            _linear_bands(row[0], points)
            row[0].set_title(f"E3: top-1 before and after adaptation, each shift at its calibrated strength\n"
                             f"({_seeds(sub, ['shift', 'strength', 'method'])} per point) [{hw}]", fontsize=9)
        for ax, shift in zip(row if several else [], shifts):
            g = sub[sub["shift"] == shift]
            for m in ["before", *methods]:
                if m == "before":
                    vals = g.drop_duplicates(["strength", "seed", "initial_acc1"]).groupby("strength")["initial_acc1"]
                else:
                    vals = g[g["method"] == m].groupby("strength")["acc1"]
                st = vals.agg(["mean", _sd]).reset_index()
                ax.errorbar(st["strength"], st["mean"], yerr=st["_sd"], color=_color(m), marker=_marker(m),
                            capsize=3, mfc="white" if m == "before" else _color(m))
            ax.set_xticks(sorted(g["strength"].unique()), [f"{v:g}" for v in sorted(g["strength"].unique())])
            ax.set_title(f"{shift} ({'linear' if shift in LINEAR else 'nonlinear'})"
                         + (f" [{_short_hw(hws)[hw]}]" if len(hws) > 1 else ""), fontsize=9)
            ax.set_xlabel("shift strength")
        for ax in row:
            ax.grid(axis="y", alpha=0.3)
        row[0].set_ylabel("top-1 on the shifted target (%)")
    if not several:
        _headroom(axes[:1, :1])
    else:
        fig.suptitle(f"E3: top-1 before and after adaptation against shift strength "
                     f"({_seeds(r, ['hardware', 'shift', 'strength', 'method'])} per point) {_hw_title(hws)}",
                     fontsize=10)
    _legend(fig, _method_handles(["before", *methods], line=bool(several)) +
            [Line2D([], [], ls="none", label=ERRORS)], ncol=3)
    return fig


def fig3_adaptation_capacity(runs, curves, bench, **_):
    r = _e3(runs)
    fig, axes, hws = _e3_axes(r, 1, 7.5, 3.6)
    if r.empty:
        _empty(axes[0, 0], "E3 not run at this scale")
        return fig
    methods = _order(r["method"])
    for (ax,), hw in zip(axes, hws):
        sub = r[r["hardware"] == hw]
        points = _shift_points(sub)
        width = 0.8 / len(methods)
        for j, m in enumerate(methods):
            g = sub[sub["method"] == m]
            stats = [g[(g["shift"] == s) & (g["strength"] == v)]["recovered"] for s, v in points]
            ax.bar(np.arange(len(points)) + (j - (len(methods) - 1) / 2) * width, [v.mean() for v in stats], width,
                   yerr=[_sd(v) for v in stats], capsize=3, color=_color(m), label=METHOD_LABELS.get(m, m))
        ax.axhline(0, color="black", lw=0.8)
        _linear_bands(ax, points)
        ax.set_ylabel("accuracy recovered\n(top-1 after − before, pp)")
        where = ("each shift at its calibrated strength" if sub.groupby("shift")["strength"].nunique().max() == 1
                 else "per shift and strength")
        ax.set_title(f"E3: accuracy recovered by adaptation, {where}\n"
                     f"({_seeds(sub, ['shift', 'strength', 'method'])} per bar) [{hw}]", fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    _headroom(axes[:1, :1])
    _legend(fig, [matplotlib.patches.Patch(color=_color(m), label=METHOD_LABELS.get(m, m)) for m in methods] +
            [Line2D([], [], ls="none", label=ERRORS)], ncol=4)
    return fig


# ---------------------------------------------------------------- E2
def _train_s(df: pd.DataFrame) -> pd.Series:
    """Training device-seconds of whole runs (the cost as the paper counts it; cost_s for runs without it)."""
    t = df["train_s"].astype(float) if "train_s" in df else pd.Series(math.nan, index=df.index)
    return t.fillna(df["cost_s"].astype(float)) if "cost_s" in df else t


def _fit_y(ax, values: list, log: bool = False) -> None:
    """Extend the y limits to lines the autoscale does not see (axhline), with a margin."""
    lo, hi = ax.get_ylim()
    if values:
        vals = [math.log10(v) for v in values if v > 0] if log else values
        span = (max(vals) - min(vals)) or 1.0
        f = (lambda v: 10.0 ** v) if log else (lambda v: v)
        lo, hi = min(lo, f(min(vals) - 0.1 * span)), max(hi, f(max(vals) + 0.1 * span))
    ax.set_ylim(lo, hi)


def fig2_pretraining_scale(runs, curves, bench, **_):
    r = finished(runs, "e2")
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4.4), layout="constrained")
    if r.empty:
        _empty(a1, "E2 not run at this scale")
        _empty(a2, "")
        return fig
    pre = finished(runs).drop_duplicates(["hardware", "run"]).set_index(["hardware", "run"])
    size = pre["train_images"].to_dict() if "train_images" in pre else {}
    cost = _train_s(pre).to_dict()
    keys = list(zip(r["hardware"], r["pretrained_run"]))
    r = r.assign(images=[size.get(k, math.nan) for k in keys], pre_s=[cost.get(k, math.nan) for k in keys],
                 train=_train_s(r))
    hws, methods, sizes, flat = sorted(r["hardware"].unique()), set(), set(), {a1: [], a2: []}
    lines_only = set(r["method"]) - set(r.loc[r["pretrained_run"].notna(), "method"])
    for (hw, method), g in r.groupby(["hardware", "method"]):
        ls, c = _style(hw, hws), _color(method)
        methods.add(method)
        if g["pretrained_run"].isna().all():  # trained without pretraining: a horizontal line, ± s.d. as a band
            m, s, t = g["acc1"].mean(), _sd(g["acc1"]), g["train"].mean()
            a1.axhline(m, color=c, ls=ls)
            a1.axhspan(m - s, m + s, color=c, alpha=0.12)
            a2.axhline(t, color=c, ls=ls)
            flat[a1] += [m - s, m + s]
            flat[a2] += [t]
            continue
        s = g.groupby("images").agg(acc=("acc1", "mean"), acc_sd=("acc1", _sd), t=("train", "mean"),
                                    t_sd=("train", _sd), pre=("pre_s", "mean"), n=("acc1", "size")).reset_index()
        sizes |= set(s["images"].dropna())
        a1.errorbar(s["images"], s["acc"], yerr=s["acc_sd"], color=c, marker=_marker(method), capsize=3, ls=ls)
        for x, y, n in zip(s["images"], s["acc"], s["n"]):
            a1.annotate(f"n={n}", (x, y), textcoords="offset points", xytext=(6, 6), fontsize=7)
        a2.errorbar(s["images"], s["t"], yerr=s["t_sd"], color=c, marker=_marker(method), capsize=3, ls=ls)
        a2.plot(s["images"], s["pre"], color=_color("first_order"), marker=_marker("first_order"), ls=ls)
        methods.add("first_order")
    for ax in (a1, a2):
        ax.set_xscale("log")
        if sizes:
            ax.set_xticks(sorted(sizes), [f"{x:,.0f}" for x in sorted(sizes)])
            ax.set_xlim(min(sizes) / 1.4, max(sizes) * 1.4)
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xlabel("pretraining set (source images, log)")
        ax.grid(alpha=0.3)
    a1.set_ylabel("target top-1 accuracy (%)")
    a1.set_title("accuracy on the target task", fontsize=9)
    a1.margins(y=0.15)
    _fit_y(a1, flat[a1])
    a2.set_ylabel("training device-seconds of the whole run (log)")
    a2.set_title("cost: adaptation, its pretraining, scratch", fontsize=9)
    a2.set_yscale("log")
    a2.margins(y=0.15)
    _fit_y(a2, flat[a2], log=True)
    lo, hi = a2.get_ylim()
    a2.set_yticks(_ticks125(lo, hi), [f"{t:g}" for t in _ticks125(lo, hi)])
    a2.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    a2.set_ylim(lo, hi)
    fig.suptitle(f"E2: pretraining scale {_hw_title(hws)}", fontsize=10)
    labels = {m: METHOD_LABELS.get(m, m) for m in methods}
    for m in lines_only:
        labels[m] += " (no pretraining; band ± 1 s.d.)"
    handles = [Line2D([], [], color=_color(m), marker=None if m in lines_only else _marker(m),
                      label=labels[m]) for m in _order(methods)]
    _legend(fig, handles + _hw_handles(hws) + [Line2D([], [], ls="none", label=f"{ERRORS} (n per point)")], ncol=3)
    return fig


# ---------------------------------------------------------------- E1
def _ticks125(lo: float, hi: float) -> list:
    """Decade ticks between lo and hi, or 1-2-5 ticks where fewer than three decades fit."""
    k = range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1)
    ticks = [10.0 ** e for e in k if lo <= 10.0 ** e <= hi]
    if len(ticks) >= 3:
        return ticks
    return sorted(m * 10.0 ** e for e in k for m in (1, 2, 5) if lo <= m * 10.0 ** e <= hi)


def _log_ticks(ax, start: float, lo: float, hi: float) -> None:
    """Log x axis from `lo` to `hi`: 1-2-5 ticks (decades where they are enough) and `start` labelled 0 (step 0)."""
    ticks = _ticks125(start * 2, hi)
    ax.set_xscale("log")
    ax.set_xlim(lo, hi)
    ax.set_xticks([start, *ticks], ["0", *[f"{t:g}" for t in ticks]])
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.axvline(math.sqrt(start * min([t for t in ticks if t > start] or [hi])), color="grey", lw=0.6, ls=(0, (1, 3)))


def _crossings(ax, times: pd.DataFrame) -> None:
    """Mark each method's mean time to target on the target line and list them (n reached / n), lower right."""
    lines = []
    for row in times.assign(_o=times["method"].map(_rank)).sort_values("_o").itertuples():
        name = SHORT.get(row.method, row.method)
        if row.reached:
            ax.plot(row.t_s, row.target_acc1, marker="|", ms=16, mew=2.5, color=_color(row.method), zorder=5)
            lines.append((f"{name}: {row.t_s:.3g} s ({row.reached}/{row.seeds})", _color(row.method)))
        else:
            lines.append((f"{name}: not reached (0/{row.seeds})", _color(row.method)))
    y = 0.03
    for text, color in reversed(lines):
        ax.text(0.98, y, text, transform=ax.transAxes, ha="right", va="bottom", fontsize=7, color=color,
                bbox=dict(fc="white", ec="none", alpha=0.8, pad=0.5))
        y += 0.055
    if lines:
        ax.text(0.98, y, "time to target (training s, reached/seeds):", transform=ax.transAxes, ha="right",
                va="bottom", fontsize=7, weight="bold", bbox=dict(fc="white", ec="none", alpha=0.8, pad=0.5))


def _savings_note(sv: pd.DataFrame) -> str:
    """V2 adaptation's savings to the target (and full-schedule energy savings where measured or estimated)."""
    out = []
    for row in sv.itertuples():
        if getattr(row, "start_meets_target", False):
            s = "V2 adapt's start already meets the target: no savings to measure"
        else:
            reached = f" ({row.adapt_reached}/{row.seeds} seeds reach it)" if row.adapt_reached < row.seeds else ""
            s = f"V2 adapt saves {100 * row.savings_to_target:.0f}% of scratch's time to target{reached}"
        energy = getattr(row, "energy_savings_full_schedule", math.nan)
        if pd.notna(energy):
            s += f"\nfull-schedule energy savings {100 * energy:.0f}% ({row.energy_savings_how})"
        out.append(s)
    return "\n".join(out)


def _where(df: pd.DataFrame, **eq) -> pd.DataFrame:
    if df.empty:
        return df
    mask = np.ones(len(df), dtype=bool)
    for col, value in eq.items():
        mask &= (df[col] == value).to_numpy()
    return df[mask]


def _cost_panel(ax, here: pd.DataFrame, lines: dict, times: pd.DataFrame, sv: pd.DataFrame, title: str) -> None:
    """One backbone and setting of one reference: mean top-1 per evaluation against training seconds (log), the
    evaluation before training at the tick '0', the target and each method's time to it."""
    stats = {m: eval_stats(g, lines) for m, g in here.groupby("method")}
    pos = [x for s in stats.values() for x in s.loc[~s["initial"].astype(bool), "x"] if x > 0]
    if not pos:
        _empty(ax, f"{title}: no evaluation logged")
        return
    start = min(pos) / 4  # where the evaluation before training (x = 0) is drawn on the log axis
    for m in _order(stats):
        s = stats[m].assign(x=stats[m]["x"].where(~stats[m]["initial"].astype(bool) & (stats[m]["x"] > 0), start))
        first, rest = s[s["x"] == start], s[s["x"] > start]
        ax.errorbar(rest["x"], rest["y"], yerr=rest["y_sd"], color=_color(m), marker=_marker(m), ms=3.5, capsize=2,
                    lw=1.2, elinewidth=0.8)
        ax.errorbar(first["x"], first["y"], yerr=first["y_sd"], color=_color(m), marker=_marker(m), ms=7,
                    mfc="white", capsize=2, elinewidth=0.8, ls="none")
        if len(first) and len(rest):  # nothing was evaluated in between: a thin dotted link
            ax.plot([start, rest["x"].iloc[0]], [first["y"].iloc[0], rest["y"].iloc[0]], lw=0.6, color=_color(m),
                    ls=(0, (1, 2)))
    if len(times):
        ax.axhline(times["target_acc1"].iloc[0], color="black", lw=0.8, ls=":")
        _crossings(ax, times)
    note = _savings_note(sv)
    target = f"target {times['target_acc1'].iloc[0]:.1f}%" if len(times) else "no scratch runs: no target"
    ax.set_title(f"{title}: {target}" + (f"\n{note}" if note else ""), fontsize=8.5)
    _log_ticks(ax, start, start / 1.6, max(x for s in stats.values() for x in s["x"]) * 1.4)
    ax.set_xlabel("training device-seconds since the first optimizer step (log)")
    ax.set_ylabel("top-1 accuracy (%)")
    ax.grid(alpha=0.3)


def fig6_accuracy_vs_cost(runs, curves, bench, **_):
    r = finished(runs, "e1")
    if len(r):  # backbones trained from scratch alone (the high-order peers) have no adaptation to cost: figure 4
        r = r[r.groupby(["hardware", "backbone"])["method"].transform("nunique") > 1]
    panels = list(dict.fromkeys(zip(r["hardware"], r["backbone"], r["variant"]))) if len(r) else []
    n = max(len(panels), 1)
    cols = min(n, 3)
    fig, axes = plt.subplots(math.ceil(n / cols), cols, figsize=(5.2 * cols, 4.6 * math.ceil(n / cols) + 1.2),
                             squeeze=False, layout="constrained")
    if not panels:
        _empty(axes[0, 0], "E1 not run at this scale")
        return fig
    hws, lines = sorted(r["hardware"].unique()), _log_lines(curves, zip(r["hardware"], r["run"]))
    times, sv, short = method_times(r, curves), savings(r, curves), _short_hw(r["hardware"])
    for ax, (hw, bb, setting) in zip(axes.flat, panels):
        key = dict(hardware=hw, backbone=bb, variant=setting)
        _cost_panel(ax, _where(r, **key), lines, _where(times, **key), _where(sv, **key),
                    f"{bb} ({setting})" + (f" [{short[hw]}]" if len(hws) > 1 else ""))
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.suptitle(f"E1: accuracy vs training cost {_hw_title(hws)}", fontsize=10)
    extra = [Line2D([], [], ls="none", marker="o", mfc="white", color="grey", ms=7,
                    label="evaluation before training (drawn at the tick '0')"),
             Line2D([], [], color="black", ls=":", label=f"target: scratch's mean final top-1 − {TOLERANCE_PP:g} pp"),
             Line2D([], [], ls="none", marker="|", ms=12, mew=2.5, color="grey",
                    label="time to target: first evaluation at or above it (mean of the seeds that reach it)"),
             Line2D([], [], ls="none", label=f"{ERRORS}; evaluation time excluded")]
    _legend(fig, _method_handles(_order(r["method"])) + extra, ncol=cols + 1)
    return fig


# ---------------------------------------------------------------- stage training
def _stages_of(runs: pd.DataFrame) -> pd.Series:
    return runs.get("cfg.train.stages", pd.Series("[]", index=runs.index)).fillna("[]").map(
        lambda s: len(json.loads(s)) if isinstance(s, str) else 0)


def _prefer_transfer(df: pd.DataFrame, key=None) -> pd.DataFrame:
    """The runs of one (hardware, backbone, setting): `key` where df has it, else a transfer setting (source
    pretraining) when there is one."""
    df = df.assign(_t=df["variant"] != "transfer", _k=[k != key for k in zip(df["hardware"], df["backbone"],
                                                                            df["variant"])])
    hw, bb, setting = df.sort_values(["_k", "_t", "hardware", "backbone"], kind="stable")[
        ["hardware", "backbone", "variant"]].iloc[0]
    return df[(df["hardware"] == hw) & (df["backbone"] == bb) & (df["variant"] == setting)]


def _stage_panel(ax, done: pd.DataFrame, curves: pd.DataFrame) -> tuple:
    """Stage 1 (the first-order run the adapter starts from) then stage 2 (adaptation) on one training-cost axis,
    beside quadratic training from scratch; (the methods drawn, their (hardware, backbone, setting))."""
    adapt = done[(done["method"] == "adapt") & done["pretrained_run"].notna() & (done["exp"] == "e1")]
    if adapt.empty:
        _empty(ax, "no adaptation from a workflow-pretrained backbone at this scale")
        return set(), None
    g = _prefer_transfer(adapt)
    hw, bb, setting = g[["hardware", "backbone", "variant"]].iloc[0]
    pre = done[(done["hardware"] == hw) & done["run"].isin(g["pretrained_run"])].drop_duplicates("run")
    offset = float(_train_s(pre).mean()) if len(pre) else 0.0
    scratch = done[(done["hardware"] == hw) & (done["backbone"] == bb) & (done["method"] == "scratch")
                   & (done["exp"] == "e1") & (done["variant"] == setting)].drop_duplicates("run")
    drawn = set()
    for part, m, dx in ((pre, "first_order", 0.0), (g, "adapt", offset), (scratch, "scratch", 0.0)):
        s = curve_stats(part, curves)
        if len(s):
            ax.errorbar(s["x"] + dx, s["y"], yerr=s["y_sd"], color=_color(m), marker=_marker(m), ms=3.5, capsize=2)
            drawn.add(m)
    ax.axvline(offset, color="grey", lw=0.8, ls="--")
    task = "source task" if setting == "transfer" else "same task"
    ax.set_title(f"{bb} ({setting}): stage 1 ({len(pre)} run(s), {task}), then\nstage 2 on the target task "
                 f"({len(g)} seeds); scratch: {len(scratch)} seeds", fontsize=9)
    ax.set_xlabel("cumulative training device-seconds")
    ax.set_ylabel("top-1 accuracy (%) on the task being trained")
    ax.grid(alpha=0.3)
    return drawn, (hw, bb, setting)


def _two_stage_panels(a_acc, a_loss, done: pd.DataFrame, curves: pd.DataFrame, key=None) -> tuple:
    """Top-1 and training loss of the two-stage runs (one line per method; those of `key` where there are), the
    end of stage 1 marked; (the methods drawn, their hardware)."""
    two = done[(_stages_of(done) >= 2) & (done["exp"] == "e1")] if len(done) else done
    if two.empty:
        _empty(a_acc, "no two-stage adaptation run at this scale")
        _empty(a_loss, "")
        return set(), None
    two = _prefer_transfer(two, key)
    hw, bb, setting = two[["hardware", "backbone", "variant"]].iloc[0]
    seeds = []
    for m in _order(two["method"]):
        g = two[two["method"] == m]
        seeds.append(f"{SHORT.get(m, m)} {len(g)}")
        acc, loss = curve_stats(g, curves), curve_stats(g, curves, event="step", y="loss")
        if len(acc):
            a_acc.errorbar(acc["x"], acc["y"], yerr=acc["y_sd"], color=_color(m), marker=_marker(m), ms=4,
                           capsize=2)
        if len(loss):
            a_loss.plot(loss["x"], loss["y"], color=_color(m))
            a_loss.fill_between(loss["x"], loss["y"] - loss["y_sd"], loss["y"] + loss["y_sd"], color=_color(m),
                                alpha=0.15, lw=0)
            first = loss[loss["stage"] == loss["stage"].min()]
            for ax in (a_acc, a_loss):
                ax.axvline(first["x"].max(), color=_color(m), lw=0.8, ls="--")
    for ax, y in ((a_acc, "top-1 accuracy (%)"), (a_loss, "training loss")):
        ax.set_title(f"two-stage runs, {bb} ({setting}; seeds: {', '.join(seeds)})\ndashed: end of stage 1",
                     fontsize=9)
        ax.set_xlabel("training device-seconds")
        ax.set_ylabel(y)
        ax.grid(alpha=0.3)
    return set(two["method"]), hw


def fig5_stage_training(runs, curves, bench, **_):
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.8), layout="constrained")
    done = finished(runs)
    if done.empty:
        for ax in axes:
            _empty(ax, "no runs at this scale")
        return fig
    drawn, key = _stage_panel(axes[0], done, curves)
    more, hw = _two_stage_panels(axes[1], axes[2], done, curves, key)
    hws = {h for h in (key[0] if key else None, hw) if h}
    fig.suptitle(f"Stage training in training device-seconds (evaluation excluded) {_hw_title(hws) if hws else ''}",
                 fontsize=10)
    drawn |= more
    _legend(fig, _method_handles(_order(drawn)) +
            [Line2D([], [], color="grey", ls="--", label="stage 1 → stage 2"),
             Line2D([], [], ls="none", label=f"{ERRORS} (loss: shaded band)")], ncol=6)
    return fig


# ---------------------------------------------------------------- architecture
def _describe(m) -> str:
    from torch import nn

    if isinstance(m, nn.Conv2d):
        k, d = m.kernel_size, m.dilation
        dw = " depthwise" if m.groups == m.in_channels and m.groups > 1 else ""
        return f"conv {k[0]}x{k[1]}{dw}{f' dil {d[0]}' if d[0] > 1 else ''}, {m.in_channels}->{m.out_channels}"
    if isinstance(m, nn.Linear):
        return f"linear {m.in_features}->{m.out_features}"
    return type(m).__name__


def _block_rows(block) -> list:
    """(title, detail lines, params, quadratic?) per non-identity child of a block, containers one level deep."""
    from torch import nn

    from ..layers import QuadraticAdapter, QuadraticConv2d

    rows = []
    for name, m in block.named_children():
        if isinstance(m, nn.Identity):
            continue
        params = sum(p.numel() for p in m.parameters())
        quad = isinstance(m, (QuadraticAdapter, QuadraticConv2d))
        title = {QuadraticAdapter: "V2: primary(x) + P(A x ⊙ B x)", QuadraticConv2d: "V1: (A x) ⊙ (B x) + C x"}.get(
            type(m), _describe(m))
        lines = [f"{n}: {_describe(c)}" for n, c in m.named_children() if not isinstance(c, nn.Identity)]
        rows.append((f"{name}: {title}  [{params:,} params]", lines, quad))
    return rows


def _first_block(model, layer_types) -> str:
    for name, m in model.named_modules():
        if isinstance(m, layer_types):
            return name.rpartition(".")[0]
    raise ValueError("no quadratic layer found")


def _draw_block(ax, title: str, model, name: str) -> None:
    total = sum(p.numel() for p in model.parameters())
    ax.set_title(f"{title}\nblock {name}; model {total / 1e6:.2f}M params", fontsize=9)
    ax.axis("off")
    y = 0.0
    for i, (head, lines, quad) in enumerate(_block_rows(model.get_submodule(name))):
        h = 0.5 + 0.35 * len(lines)
        ax.add_patch(matplotlib.patches.FancyBboxPatch((0.02, y - h), 0.96, h, boxstyle="round,pad=0.01",
                                                       fc="#f6c28b" if quad else "#dbe9f6", ec="black", lw=0.6))
        ax.text(0.5, y - 0.25, head, ha="center", va="center", fontsize=7.5, weight="bold" if quad else None)
        for j, line in enumerate(lines):
            ax.text(0.5, y - 0.55 - 0.35 * j, line, ha="center", va="center", fontsize=6.5)
        if i:
            ax.annotate("", (0.5, y), (0.5, y + 0.3), arrowprops=dict(arrowstyle="->", lw=0.6))
        y -= h + 0.3
    ax.set_xlim(0, 1)
    ax.set_ylim(y, 0.1)


def _high_order_points(runs: pd.DataFrame, bench: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """One row per network of the bench CSV that measured the most high-order peers (train mode): label, variant,
    images/s, kept for backward, and the top-1 over seeds of its E1 runs from scratch (V2: its adaptation) on the
    reference with the most such runs; and a caption naming both sources."""
    if bench.empty or "arch" not in bench:
        return pd.DataFrame(), ""
    b = bench[(bench["mode"] == "train") & bench["arch"].notna()]
    peers = b[b["variant"].isin(PEER_LABELS)]
    if peers.empty:
        return pd.DataFrame(), ""
    r = finished(runs, "e1")
    if r.empty or "cfg.model.arch" not in r:
        return pd.DataFrame(), ""
    r = r.drop_duplicates(["hardware", "run"])
    # the bench CSV with the most peers whose networks have runs (a size without runs has nothing to draw)
    have = peers[peers["arch"].isin(set(r["cfg.model.arch"]))]
    if have.empty:
        return pd.DataFrame(), ""
    src = have.groupby(["hardware", "source"])["variant"].nunique().idxmax()
    b = b[(b["hardware"] == src[0]) & (b["source"] == src[1])].drop_duplicates("variant").set_index("variant")
    base = b.loc["first_order", "arch"] if "first_order" in b.index else None
    wanted = {"first_order": (r["method"] == "fo_scratch") & (r["cfg.model.arch"] == base),
              "adapted": (r["method"] == "adapt") & (r["variant"] == "intask") & (r["cfg.model.arch"] == base)}
    for v in ("v1", *PEER_LABELS):
        if v in b.index:
            wanted[v] = (r["cfg.method"] == "scratch") & (r["cfg.model.arch"] == b.loc[v, "arch"])
    counts = r[np.logical_or.reduce(list(wanted.values()))].groupby("hardware").size()
    if counts.empty:
        return pd.DataFrame(), ""
    hw = counts.idxmax()
    labels = {"first_order": f"first-order {base}", "adapted": f"V2: {base} adapted (from first-order weights)",
              "v1": "QuadraNet V1", **PEER_LABELS}
    rows = []
    for v, mask in wanted.items():
        acc = r.loc[mask & (r["hardware"] == hw), "acc1"]
        if v in b.index and len(acc):
            rows.append({"variant": v, "label": f"{labels[v]} ({b.loc[v, 'arch']})", "images_per_s":
                         b.loc[v, "images_per_s"], "kept_mb": b.loc[v, "saved_for_backward_mb"],
                         "acc": acc.mean(), "sd": _sd(acc), "n": len(acc)})
    caption = f"top-1: E1 runs [{hw}]; speed and memory: bench {src[1]} [{src[0]}], train step, one process"
    return pd.DataFrame(rows), caption


def fig4_architecture(runs, curves, bench, arch: str = "convnext_atto", **_):
    import timm

    import quadranet
    from ..layers import QuadraticAdapter, QuadraticConv2d

    first = timm.create_model(arch, num_classes=10)
    adapted = quadranet.quadratize(timm.create_model(arch, num_classes=10))
    v1_arch = {"test_convnext": "quadranet_v1_test"}.get(arch, f"quadranet_v1_{arch.removeprefix('convnext_')}")
    v1_arch = v1_arch if timm.is_model(v1_arch) else "quadranet_v1_atto"  # the V1 network of the same shape
    v1 = timm.create_model(v1_arch, num_classes=10)
    block, v1_block = _first_block(adapted, QuadraticAdapter), _first_block(v1, QuadraticConv2d)
    fig = plt.figure(figsize=(14, 10.5), layout="constrained")
    top, bottom = fig.subfigures(2, 1, height_ratios=[1.35, 1])
    for ax, (title, model, name) in zip(top.subplots(1, 3), [
            (f"first-order {arch}", first, block), (f"QuadraNet V1 ({v1_arch})", v1, v1_block),
            (f"QuadraNet V2: quadratized {arch}", adapted, block)]):
        _draw_block(ax, title, model, name)
    top.suptitle("One block of each network, drawn from the modules the code builds (orange: quadratic neurons; "
                 "identity shortcut not drawn)", fontsize=10)
    a1, a2 = bottom.subplots(1, 2)
    points, caption = _high_order_points(runs, bench)
    if points.empty:
        for ax in (a1, a2):
            _empty(ax, "no bench measured the high-order peers (hornet, gfnet, focalnet) beside runs from scratch")
    else:
        for ax, x, xlabel in ((a1, "images_per_s", "train images/s (higher is faster)"),
                              (a2, "kept_mb", "MB kept for one train step's backward (lower is leaner)")):
            for p in points.itertuples():
                ax.errorbar(getattr(p, x), p.acc, yerr=p.sd, fmt="o", ms=8, capsize=3,
                            color=VARIANT_COLORS.get(p.variant, "black"), label=f"{p.label}, n={p.n}")
            ax.set_xlabel(xlabel)
            ax.set_ylabel("top-1 (%)")
            ax.grid(alpha=0.3)
        bottom.suptitle(f"Measured at one size: {caption}; {ERRORS}", fontsize=9)
        handles, labels = a1.get_legend_handles_labels()
        bottom.legend(handles, labels, loc="outside lower center", ncol=3, fontsize=8, frameon=False)
    return fig


# ---------------------------------------------------------------- E5
def _bench_rows(bench: pd.DataFrame, mode: str = "train") -> pd.DataFrame:
    """Bench rows of one mode with a `key`: model (a single layer marked), the settings that differ between rows
    of the same model (channels-last, runtime: eager where missing, and the CSV where one model and runtime were
    measured in several) and the short hardware name."""
    b = bench[bench["mode"] == mode] if "mode" in bench else bench
    if b.empty or "model" not in b:
        return b
    short = _short_hw(b["hardware"].astype(str))
    layer = b["source"] == "layer" if "source" in b else pd.Series(False, index=b.index)
    b = b.assign(runtime=b["runtime"].fillna("eager") if "runtime" in b else "eager",
                 cl=b["channels_last"].map({True: "channels-last", False: "no channels-last"}).fillna("")
                 if "channels_last" in b else "",
                 src=b["source"].astype(str).str.replace(r"^[^-]*-?", "", regex=True)  # the CSV's name less the
                 .str.replace(r"-?(no-)?channels-last", "", regex=True)  # model's (and the layout, shown apart)
                 if "source" in b else "")
    parts = [b["model"].astype(str) + np.where(layer, " (one layer)", "")]
    for col, within in (("cl", ["model"]), ("runtime", ["model"]), ("src", ["hardware", "model", "runtime", "cl"])):
        varies = b.groupby(within)[col].transform("nunique") > 1
        parts.append(np.where(varies & (b[col].astype(str) != ""), ", " + b[col].astype(str), ""))
    hw = b["hardware"].astype(str).map(short)
    return b.assign(key=parts[0] + parts[1] + parts[2] + parts[3] + "\n[" + hw + "]")


def _bars(ax, b: pd.DataFrame, col: str, variants: list, label: str, keys: Optional[list] = None) -> None:
    """Horizontal bars of `col` per key (one row per key, one bar per variant), keys top to bottom."""
    keys = keys or list(dict.fromkeys(b["key"]))
    if col not in b or b[col].isna().all():
        _empty(ax, f"no {col} in the bench rows")
        return
    piv = b.pivot_table(index="key", columns="variant", values=col, aggfunc="mean").reindex(keys)
    shown = [v for v in variants if v in piv]
    width, y0 = 0.84 / max(len(shown), 1), np.arange(len(keys))
    for j, v in enumerate(shown):
        ax.barh(y0 + (j - (len(shown) - 1) / 2) * width, piv[v], width, color=VARIANT_COLORS.get(v, "grey"),
                label=v, edgecolor="#d62728" if v in VARIANT_HATCH else "white", lw=0.3, hatch=VARIANT_HATCH.get(v))
    if col == "ratio_vs_first_order":
        ax.axvline(1.0, color="black", lw=0.8)
    ax.set_yticks(y0, keys, fontsize=8)
    ax.set_ylim(len(keys) - 0.5, -0.5)
    ax.set_xlabel(label)
    ax.grid(axis="x", alpha=0.3)


def fig7_efficiency(runs, curves, bench, **_):
    """Top: training step time and memory of each variant (eager PyTorch). Bottom, where the bench measured
    exported models (`quadranet bench --runtime`): inference time per runtime, one panel each."""
    train = _bench_rows(bench, "train")
    infer = _bench_rows(bench, "infer")
    if "runtime" in bench and len(infer):  # the deployment bench's rows, keyed by model (and CSV where several)
        infer = infer[infer["source"].isin(bench.loc[bench["runtime"].notna(), "source"])]
        several = infer.groupby(["hardware", "model"])["src"].transform("nunique") > 1
        hw = infer["hardware"].astype(str).map(_short_hw(bench["hardware"].astype(str)))
        infer = infer.assign(key=infer["model"].astype(str) + np.where(several, ", " + infer["src"], "")
                             + "\n[" + hw + "]")
    n_train = train["key"].nunique() if "key" in train else 0
    runtimes = [r for r in RUNTIMES if "runtime" in infer and r in set(infer["runtime"])] if len(infer) else []
    n_infer = infer["key"].nunique() if runtimes else 0
    if not n_train and not n_infer:
        fig, ax = plt.subplots(figsize=(12, 3.8), layout="constrained")
        _empty(ax, "E5 not run at this scale")
        return fig
    heights = [0.5 * n + 1.6 for n in (n_train, n_infer) if n]
    fig = plt.figure(figsize=(12, sum(heights) + 0.8), layout="constrained")
    parts = fig.subfigures(len(heights), 1, height_ratios=heights) if len(heights) > 1 else [fig]
    both = pd.concat([train, infer])
    present = set(both["variant"])
    variants = [v for v in VARIANT_COLORS if v in present] + sorted(present - set(VARIANT_COLORS))
    ratios = [v for v in variants if v != "first_order"]  # first-order is the line at 1
    if n_train:
        a1, a2 = parts[0].subplots(1, 2, sharey=True)
        _bars(a1, train, "ratio_vs_first_order", ratios, "training step time / first-order's (x)")
        _bars(a2, train, "saved_for_backward_mb", variants, "memory kept for backward (MB)")
        parts[0].suptitle("training step, eager PyTorch (the workflow's E5 bench and the adapters' bench)", fontsize=9)
    if n_infer:
        axes = np.atleast_1d(parts[-1].subplots(1, len(runtimes), sharey=True, sharex=True))
        keys = list(dict.fromkeys(infer["key"]))
        for ax, rt in zip(axes, runtimes):
            _bars(ax, infer[infer["runtime"] == rt], "ratio_vs_first_order", ratios, "time / first-order's (x)", keys)
            ax.set_title(rt, fontsize=9)
        parts[-1].suptitle("inference of the exported models (quadranet bench --runtime): each runtime against its "
                           "own first-order model", fontsize=9)
    hws = sorted(both["hardware"].astype(str).unique())
    fig.suptitle(f"E5: cost of each variant against the first-order model (median step time; batch "
                 f"{_uniq(both, 'batch')}) {_hw_title(hws)}", fontsize=10)
    _legend(fig, [matplotlib.patches.Patch(fc=VARIANT_COLORS.get(v, "grey"), hatch=VARIANT_HATCH.get(v), label=v,
                                           ec="#d62728" if v in VARIANT_HATCH else "none") for v in variants], ncol=6)
    return fig


def _uniq(df: pd.DataFrame, col: str) -> str:
    vals = sorted(df[col].dropna().unique()) if col in df else []
    return "/".join(f"{v:g}" if isinstance(v, float) else str(v) for v in vals) or "?"


BUILDERS = {name: globals()[name] for name in FIGURES}


def write_figures(runs: pd.DataFrame, curves: pd.DataFrame, bench: pd.DataFrame, out_dir,
                  arch: str = "convnext_atto") -> list[str]:
    """Draw every figure into out_dir (PNG + PDF), each run once (collect.count_once); returns their names."""
    runs, _ = count_once(runs)
    for name, build in BUILDERS.items():
        save(build(runs, curves, bench, arch=arch), out_dir, name)
    return list(BUILDERS)
