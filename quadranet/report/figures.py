"""The seven figures (PNG + PDF), from collected runs; mean ± std over seeds wherever a point has seeds.

    fig1_linear_vs_nonlinear   E3: top-1 after adaptation vs shift strength, per shift (paper Fig. 1)
    fig2_pretraining_scale     E2: top-1 and device time vs the size of the pretraining set (paper Fig. 2)
    fig3_adaptation_capacity   E3: accuracy recovered by LoRA / quadratic adapter / finetune (paper Fig. 3)
    fig4_architecture          one block of the first-order, QuadraNet V1 and V2-adapted models, drawn from
                               the modules timm and quadranet build (paper Fig. 4)
    fig5_stage_training        stage 1 (first-order pretraining) then stage 2 (quadratic adaptation), and a
                               two-stage adaptation's logged curves (paper Fig. 5)
    fig6_accuracy_vs_cost      E1: top-1 vs device-seconds of every method, one panel per backbone and setting
    fig7_efficiency            E5: train-step time relative to first-order, memory kept for backward
Runs of other hardware (results/reference/<hardware>/) are drawn beside this machine's with their own
line style and labelled with the hardware.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.patches  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from ..data.shifts import LINEAR_SHIFTS  # noqa: E402
from . import FIGURES  # noqa: E402
from .savings import savings  # noqa: E402
from .tables import finished  # noqa: E402

STYLES = ("-", "--", ":", "-.")
LINEAR = LINEAR_SHIFTS
METHOD_LABELS = {"scratch": "quadratic from scratch", "adapt": "V2 adaptation (quadratic)", "finetune":
                 "first-order finetune", "fo_scratch": "first-order from scratch", "lora": "LoRA adapter",
                 "v1_scratch": "QuadraNet V1 from scratch", "head": "head only (control)"}


def _label(method: str, hw: str, many_hw: bool) -> str:
    text = METHOD_LABELS.get(method, method)
    return f"{text} [{hw}]" if many_hw else text


def _style(hw: str, hws: list) -> str:
    return STYLES[hws.index(hw) % len(STYLES)]


def _empty(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", wrap=True, transform=ax.transAxes, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])


def save(fig, out_dir, name: str) -> None:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    for ext in ("png", "pdf"):
        fig.savefig(out_dir / f"{name}.{ext}", dpi=150)
    plt.close(fig)


def curve_stats(runs: pd.DataFrame, curves: pd.DataFrame, event: str = "eval", y: str = "acc1") -> pd.DataFrame:
    """The k-th `event` line of each run, averaged over the runs (seeds): device_s and `y` mean / std."""
    if curves.empty or runs.empty:
        return pd.DataFrame()
    c = curves[curves["event"] == event].merge(runs[["hardware", "run"]].drop_duplicates(), on=["hardware", "run"])
    c = c.dropna(subset=[y]).copy()
    if c.empty:
        return c
    c["k"] = c.groupby(["hardware", "run"]).cumcount()
    g = c.groupby("k")
    return pd.DataFrame({"x": g["device_s"].mean(), "x_std": g["device_s"].std(ddof=0), "y": g[y].mean(),
                         "y_std": g[y].std(ddof=0), "n": g.size(), "stage": g["stage"].max()}).reset_index()


# ---------------------------------------------------------------- E3
def _e3(runs: pd.DataFrame) -> pd.DataFrame:
    r = finished(runs, "e3")
    if r.empty:
        return r
    return r.assign(shift=r["cfg.data.shift"], strength=r["cfg.data.shift_strength"].astype(float),
                    recovered=r["acc1"] - r["initial_acc1"])


def fig1_linear_vs_nonlinear(runs, curves, bench, ax_size=3.2, **_):
    r = _e3(runs)
    shifts = sorted(r["shift"].unique(), key=lambda s: (s not in LINEAR, s)) if len(r) else []
    fig, axes = plt.subplots(1, max(len(shifts), 1), figsize=(ax_size * max(len(shifts), 1), ax_size + 0.4),
                             sharey=True, squeeze=False)
    if not shifts:
        _empty(axes[0, 0], "E3 not run at this scale")
        return fig
    hws = sorted(r["hardware"].unique())
    for ax, shift in zip(axes[0], shifts):
        sub = r[r["shift"] == shift]
        for (hw, method), g in sub.groupby(["hardware", "method"]):
            s = g.groupby("strength")["acc1"].agg(["mean", "std"]).reset_index()
            ax.errorbar(s["strength"], s["mean"], yerr=s["std"].fillna(0), marker="o", capsize=3,
                        ls=_style(hw, hws), label=_label(method, hw, len(hws) > 1))
        for hw, g in sub.groupby("hardware"):
            s = g.groupby("strength")["initial_acc1"].agg(["mean", "std"]).reset_index()
            ax.errorbar(s["strength"], s["mean"], yerr=s["std"].fillna(0), color="grey", marker="x", capsize=3,
                        ls=_style(hw, hws), label=_label("before adaptation", hw, len(hws) > 1))
        ax.set_title(f"{shift} ({'linear' if shift in LINEAR else 'nonlinear'})")
        ax.set_xlabel("shift strength (0 = none, 1 = strongest)")
        ax.set_xlim(0, 1.05)
        ax.grid(alpha=0.3)
    axes[0, 0].set_ylabel("top-1 accuracy on the shifted target (%)")
    axes[0, -1].legend(fontsize=7)
    return fig


def fig3_adaptation_capacity(runs, curves, bench, **_):
    r = _e3(runs)
    fig, ax = plt.subplots(figsize=(7, 3.8))
    if r.empty:
        _empty(ax, "E3 not run at this scale")
        return fig
    r = r[r["strength"] == r.groupby("shift")["strength"].transform("max")]
    shifts = sorted(r["shift"].unique(), key=lambda s: (s not in LINEAR, s))
    groups = sorted({(hw, m) for hw, m in zip(r["hardware"], r["method"])})
    many = len({hw for hw, _ in groups}) > 1
    width = 0.8 / len(groups)
    for i, (hw, method) in enumerate(groups):
        g = r[(r["hardware"] == hw) & (r["method"] == method)].groupby("shift")["recovered"].agg(["mean", "std"])
        g = g.reindex(shifts)
        ax.bar(np.arange(len(shifts)) + (i - (len(groups) - 1) / 2) * width, g["mean"], width,
               yerr=g["std"].fillna(0), capsize=3, label=_label(method, hw, many))
    strength = {s: r[r["shift"] == s]["strength"].max() for s in shifts}
    ax.set_xticks(range(len(shifts)), [f"{s}\n({'linear' if s in LINEAR else 'nonlinear'}, {strength[s]:g})"
                                       for s in shifts], fontsize=8)
    ax.axhline(0, color="black", lw=0.8)
    ax.set_ylabel("accuracy recovered by adaptation\n(top-1 after - before, pp)")
    ax.set_xlabel("pixel-wise shift (kind, strength)")
    ax.legend(fontsize=7)
    ax.grid(axis="y", alpha=0.3)
    return fig


# ---------------------------------------------------------------- E2
def fig2_pretraining_scale(runs, curves, bench, **_):
    r = finished(runs, "e2")
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.8))
    if r.empty:
        _empty(a1, "E2 not run at this scale")
        _empty(a2, "")
        return fig
    pre = finished(runs).drop_duplicates(["hardware", "run"]).set_index(["hardware", "run"])
    size = {k: v for k, v in pre.get("train_images", pd.Series(dtype=float)).items()}
    cost = pre["cost_s"].to_dict()
    r = r.assign(images=[size.get((h, p), math.nan) for h, p in zip(r["hardware"], r["pretrained_run"])],
                 pre_s=[cost.get((h, p), math.nan) for h, p in zip(r["hardware"], r["pretrained_run"])])
    hws = sorted(r["hardware"].unique())
    for (hw, method), g in r.groupby(["hardware", "method"]):
        ls, label = _style(hw, hws), _label(method, hw, len(hws) > 1)
        if g["pretrained_run"].isna().all():  # the reference without pretraining: a horizontal band
            m, s = g["acc1"].mean(), g["acc1"].std(ddof=0)
            a1.axhline(m, color="grey", ls=ls, label=f"{label} (no pretraining)")
            a1.axhspan(m - s, m + s, color="grey", alpha=0.15)
            a2.axhline(g["cost_s"].mean(), color="grey", ls=ls, label=f"{label}: training")
            continue
        s = g.groupby("images").agg(acc=("acc1", "mean"), acc_std=("acc1", "std"), cost=("cost_s", "mean"),
                                    cost_std=("cost_s", "std"), pre=("pre_s", "mean")).reset_index()
        a1.errorbar(s["images"], s["acc"], yerr=s["acc_std"].fillna(0), marker="o", capsize=3, ls=ls, label=label)
        a2.errorbar(s["images"], s["cost"], yerr=s["cost_std"].fillna(0), marker="o", capsize=3, ls=ls,
                    label=f"{label}: adaptation")
        a2.plot(s["images"], s["pre"], marker="s", ls=ls, label=f"first-order pretraining [{hw}]" if len(hws) > 1
                else "first-order pretraining")
    for ax in (a1, a2):
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xlabel("pretraining set (source images)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    a1.set_ylabel("target top-1 accuracy (%)")
    a2.set_ylabel("device-seconds")
    a2.set_yscale("log")
    a2.yaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
    a2.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    return fig


# ---------------------------------------------------------------- E1
def fig6_accuracy_vs_cost(runs, curves, bench, **_):
    r = finished(runs, "e1")
    bbs = list(dict.fromkeys(zip(r["backbone"], r["variant"]))) if len(r) else []
    n = max(len(bbs), 1)
    cols = min(n, 3)
    # each panel's legend goes below it (one line per method and hardware would hide the curves)
    fig, axes = plt.subplots(math.ceil(n / cols), cols, figsize=(4.5 * cols, 6.5 * math.ceil(n / cols)), squeeze=False)
    if not bbs:
        _empty(axes[0, 0], "E1 not run at this scale")
        return fig
    hws = sorted(r["hardware"].unique())
    sv = savings(runs, curves)
    for ax, (bb, setting) in zip(axes.flat, bbs):
        for (hw, method), g in r[(r["backbone"] == bb) & (r["variant"] == setting)].groupby(["hardware", "method"]):
            s = curve_stats(g, curves)
            if len(s):
                ax.errorbar(s["x"], s["y"], xerr=s["x_std"].fillna(0), yerr=s["y_std"].fillna(0), marker=".",
                            capsize=2, ls=_style(hw, hws), label=_label(method, hw, len(hws) > 1))
        t = sv[(sv["exp"] == "e1") & (sv["backbone"] == bb) & (sv["variant"] == setting)] if len(sv) else sv
        for row in t.itertuples():
            energy = getattr(row, "energy_savings_full_schedule", math.nan)
            energy = "" if pd.isna(energy) else (f"; full-schedule energy savings {100 * energy:.0f}% "
                                                  f"({row.energy_savings_how})")
            ax.axhline(row.target_acc1, color="black", lw=0.7, ls=":",
                       label=f"target {row.target_acc1:.1f}%: savings {100 * row.savings_to_target:.0f}%{energy}")
        ax.set_xlim(left=0)
        ax.set_title(f"{bb} ({setting})")
        ax.set_xlabel("device-seconds (training + evaluation)\nmean ± std over seeds")
        ax.set_ylabel("top-1 accuracy (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6, loc="upper center", bbox_to_anchor=(0.5, -0.25))
    for ax in list(axes.flat)[len(bbs):]:
        ax.axis("off")
    return fig


# ---------------------------------------------------------------- stage training
def _stages_of(runs: pd.DataFrame) -> pd.Series:
    return runs.get("cfg.train.stages", pd.Series("[]", index=runs.index)).fillna("[]").map(
        lambda s: len(json.loads(s)) if isinstance(s, str) else 0)


def fig5_stage_training(runs, curves, bench, **_):
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.8))
    done = finished(runs)
    adapt = done[(done["method"] == "adapt") & done["pretrained_run"].notna()] if len(done) else done
    adapt = adapt[(adapt["exp"] == "e1") | ((adapt["exp"] == "e4") & (adapt["variant"] == "base"))] if len(adapt) \
        else adapt
    if adapt.empty:
        _empty(a1, "no adaptation from a workflow-pretrained backbone at this scale")
    else:
        hw, bb = adapt["hardware"].iloc[0], adapt["backbone"].iloc[0]
        setting = adapt["variant"].iloc[0]
        g = adapt[(adapt["hardware"] == hw) & (adapt["backbone"] == bb) & (adapt["variant"] == setting)
                  ].drop_duplicates("run")
        pre = done[(done["hardware"] == hw) & (done["run"] == g["pretrained_run"].iloc[0])].drop_duplicates("run")
        offset = float(pre["cost_s"].iloc[0]) if len(pre) else 0.0
        for part, label, dx in ((pre, "stage 1: first-order pretraining (source task)", 0.0),
                                (g, "stage 2: quadratic adaptation (target task)", offset)):
            s = curve_stats(part, curves)
            if len(s):
                a1.errorbar(s["x"] + dx, s["y"], yerr=s["y_std"].fillna(0), marker=".", capsize=2, label=label)
        scratch = done[(done["hardware"] == hw) & (done["backbone"] == bb) & (done["method"] == "scratch")
                       & (done["exp"] == "e1") & (done["variant"] == setting)].drop_duplicates("run")
        s = curve_stats(scratch, curves)
        if len(s):
            a1.errorbar(s["x"], s["y"], yerr=s["y_std"].fillna(0), marker=".", capsize=2, ls="--",
                        label="quadratic from scratch (target task)")
        a1.axvline(offset, color="grey", lw=0.7)
        a1.set_title(f"{bb} ({setting}): stage training\n[{hw}]", fontsize=9)
        a1.set_xlabel("cumulative device-seconds")
        a1.set_ylabel("top-1 accuracy (%)")
        a1.grid(alpha=0.3)
        a1.legend(fontsize=7)
    two = done[_stages_of(done) >= 2].drop_duplicates(["hardware", "run"]) if len(done) else done
    if two.empty:
        _empty(a2, "no two-stage adaptation run at this scale")
        return fig
    two = two[two["variant"] == two["variant"].iloc[0]]
    loss = curve_stats(two, curves, event="step", y="loss")
    acc = curve_stats(two, curves)
    a2.errorbar(loss["x"], loss["y"], yerr=loss["y_std"].fillna(0), color="C0", label="training loss")
    ends = curves[(curves["event"] == "epoch") & curves["run"].isin(two["run"])].groupby("stage")["device_s"].max()
    for stage, (start, end) in enumerate(zip([0.0, *ends.iloc[:-1]], ends)):  # a stage ends with its last epoch
        a2.axvspan(start, end, color=f"C{stage + 2}", alpha=0.12, label=f"stage {stage + 1}")
    a2.set_xlabel("device-seconds")
    a2.set_ylabel("training loss")
    b = a2.twinx()
    b.errorbar(acc["x"], acc["y"], yerr=acc["y_std"].fillna(0), color="C1", marker="o", capsize=2, label="top-1")
    b.set_ylabel("top-1 accuracy (%)")
    a2.set_title(f"two-stage adaptation: {two['backbone'].iloc[0]} / {two['variant'].iloc[0]}\n"
                 f"[{two['hardware'].iloc[0]}]", fontsize=9)
    h1, l1 = a2.get_legend_handles_labels()
    h2, l2 = b.get_legend_handles_labels()
    a2.legend(h1 + h2, l1 + l2, fontsize=7)
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


def fig4_architecture(runs, curves, bench, arch: str = "convnext_atto", **_):
    import timm

    import quadranet
    from ..layers import QuadraticAdapter, QuadraticConv2d

    first = timm.create_model(arch, num_classes=10)
    adapted = quadranet.quadratize(timm.create_model(arch, num_classes=10))
    v1 = timm.create_model("quadranet_v1_atto", num_classes=10)
    block, v1_block = _first_block(adapted, QuadraticAdapter), _first_block(v1, QuadraticConv2d)
    columns = [(f"first-order {arch}", first, block), ("QuadraNet V1 (quadranet_v1_atto)", v1, v1_block),
               (f"QuadraNet V2: quadratized {arch}", adapted, block)]
    fig, axes = plt.subplots(1, 3, figsize=(14, 6))
    for ax, (title, model, name) in zip(axes, columns):
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
    fig.suptitle("One block of each network, drawn from the modules the code builds (orange: quadratic neurons; "
                 "identity shortcut not drawn)", fontsize=10)
    return fig


# ---------------------------------------------------------------- E5
def fig7_efficiency(runs, curves, bench, **_):
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.8))
    if bench.empty:
        _empty(a1, "E5 not run at this scale")
        _empty(a2, "")
        return fig
    models = bench[bench.get("source", "") != "layer"] if "source" in bench else bench
    train = models[models["mode"] == "train"] if "mode" in models else models
    y = "ratio_vs_first_order" if "ratio_vs_first_order" in train else "step_ms"
    for ax, data, col, label in ((a1, train, y, "training step time / first-order's (x)"
                                  if y == "ratio_vs_first_order" else "training step time (ms)"),
                                 (a2, bench, "saved_for_backward_mb", "memory kept for backward (MB)")):
        if data.empty or col not in data:
            _empty(ax, f"no {col} rows")
            continue
        d = data.assign(key=data["model"].astype(str) + "\n" + data["hardware"].astype(str).str.replace(
            "this machine ", "").str.slice(0, 30))
        piv = d.pivot_table(index="key", columns="variant", values=col, aggfunc="mean")
        piv.plot.bar(ax=ax, rot=0, fontsize=7)
        ax.set_ylabel(label)
        ax.set_xlabel("model [hardware]")
        ax.legend(fontsize=7, title="variant", title_fontsize=7)
        ax.grid(axis="y", alpha=0.3)
    return fig


BUILDERS = {name: globals()[name] for name in FIGURES}


def write_figures(runs: pd.DataFrame, curves: pd.DataFrame, bench: pd.DataFrame, out_dir, arch: str = "convnext_atto") -> list[str]:
    """Draw every figure into out_dir (PNG + PDF); returns their names."""
    for name, build in BUILDERS.items():
        save(build(runs, curves, bench, arch=arch), out_dir, name)
    return list(BUILDERS)
