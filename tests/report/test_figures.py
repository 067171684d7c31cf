"""The figures on the synthetic results (tests/report/conftest.py): what a reader must find in each."""
import shutil

import matplotlib.colors
import pandas as pd
import pytest

from quadranet.report import FIGURES
from quadranet.report import figures as F
from quadranet.report.collect import collect


@pytest.fixture(scope="module")
def collected(results):
    return collect(results / "manifest.tsv", sorted((results / "bench").glob("*.csv")))


def _texts(fig) -> list:
    return [t.get_text() for ax in fig.axes for t in ax.texts] + [t.get_text() for t in fig.texts]


def _legend_texts(fig) -> list:
    return [t.get_text() for lg in fig.legends for t in lg.get_texts()]


def _line_colors(fig) -> set:
    return {matplotlib.colors.to_hex(line.get_color()) for ax in fig.axes for line in ax.get_lines()}


def test_one_colour_per_method():
    methods = ["scratch", "v1_scratch", "fo_scratch", "adapt", "finetune", "lora", "head", "before"]
    colours = [F.METHOD_COLORS[m] for m in methods]
    assert len(set(colours)) == len(colours)


def test_figures_on_empty_results(tmp_path):
    empty = pd.DataFrame(columns=["hardware", "exp", "run", "status", "method"])
    assert F.write_figures(empty, pd.DataFrame(columns=["hardware", "run", "event"]), pd.DataFrame(), tmp_path) \
        == list(FIGURES)
    assert all((tmp_path / f"{name}.{ext}").stat().st_size > 1000 for name in FIGURES for ext in ("png", "pdf"))


def test_fig6_log_cost_axis_target_and_crossings(collected):
    fig = F.fig6_accuracy_vs_cost(*collected)
    panels = [ax for ax in fig.axes if ax.get_title()]
    assert len(panels) == 2  # intask and transfer
    for ax in panels:
        assert ax.get_xscale() == "log" and "0" in [t.get_text() for t in ax.get_xticklabels()]
        assert "training device-seconds" in ax.get_xlabel() and "target 84.5%" in ax.get_title()
    texts = _texts(fig)
    # adapt reaches the target (84.5) at its first evaluation, 2.5 training seconds in; LoRA never does
    assert "V2 adapt: 2.5 s (3/3)" in texts and "LoRA: not reached (0/3)" in texts
    assert not any(ax.get_legend() for ax in fig.axes) and len(fig.legends) == 1  # one legend, for the figure
    labels = _legend_texts(fig)
    assert len(labels) == len(set(labels)) and any("s.d. over seeds" in t for t in labels)
    assert {F.METHOD_COLORS[m] for m in ("adapt", "scratch", "lora")} <= _line_colors(fig)


def test_fig6_shows_energy_savings_where_measured(collected):
    runs, curves, bench = collected
    runs = runs.assign(energy_kwh=2e-3, energy_source="estimated: CodeCarbon")
    titles = [ax.get_title() for ax in F.fig6_accuracy_vs_cost(runs, curves, bench).axes]
    assert any("full-schedule energy savings 0% (estimated)" in t for t in titles)


def test_fig1_at_one_strength_per_shift_has_no_strength_axis(collected):
    runs, curves, bench = collected
    one = runs[(runs["exp"] != "e3") | (runs["cfg.data.shift_strength"] == 1.0)]
    fig = F.fig1_linear_vs_nonlinear(one, curves, bench)
    ax = fig.axes[0]
    ticks = [t.get_text().split("\n")[0] for t in ax.get_xticklabels()]
    assert ticks == ["brightness", "contrast", "gamma", "solarize"]  # linear shifts first
    assert "strength" not in ax.get_xlabel() and {"linear shifts", "nonlinear shifts"} <= set(_texts(fig))
    assert any("before adaptation" in t for t in _legend_texts(fig))


def test_fig1_against_strength_where_a_shift_has_several(collected):
    fig = F.fig1_linear_vs_nonlinear(*collected)
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == ["brightness (linear)", "contrast (linear)", "gamma (nonlinear)", "solarize (nonlinear)"]
    brightness = fig.axes[0]
    assert [t.get_text() for t in brightness.get_xticklabels()] == ["0.5", "1"]  # the strengths run, no 0-1 axis


def test_fig7_one_row_per_model_and_setting(collected):
    runs, curves, bench = collected
    extra = bench.assign(hardware="nvidia-h100", runtime="compile")
    fig = F.fig7_efficiency(runs, curves, pd.concat([bench, extra.assign(runtime=None), extra], ignore_index=True))
    labels = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert len(labels) == len(set(labels)) == 3
    assert any("compile" in t and "[nvidia-h100]" in t for t in labels) and any("eager" in t for t in labels)


def test_fig7_reads_the_deployment_bench_of_a_reference_folder(results, tmp_path):
    """A reference folder's runtime/ CSVs (`quadranet bench --runtime`) are collected beside its bench/ and
    drawn as one inference panel per runtime, each model once."""
    bench = pd.concat([pd.read_csv(f) for f in sorted((results / "bench").glob("*.csv"))], ignore_index=True)
    rows = bench[bench["variant"].isin(["first_order", "adapted"])].assign(mode="infer")
    folder = tmp_path / "reference" / "cpu-bench"
    (folder / "runtime").mkdir(parents=True)
    (folder / "bench").mkdir()
    rows.to_csv(folder / "bench" / "m-channels-last.csv", index=False)
    pd.concat([rows.assign(runtime=r) for r in ("eager", "onnxruntime")]).to_csv(folder / "runtime" / "m.csv",
                                                                                  index=False)
    runs, curves, collected = collect(results / "manifest.tsv", reference=tmp_path / "reference")
    assert set(collected["runtime"].dropna()) == {"eager", "onnxruntime"}
    fig = F.fig7_efficiency(runs, curves, collected)
    titles = [ax.get_title() for ax in fig.axes]
    assert "eager" in titles and "onnxruntime" in titles
    infer = next(ax for ax in fig.axes if ax.get_title() == "eager")  # the shared y labels: on the first panel
    labels = [t.get_text() for t in infer.get_yticklabels()]
    assert len(labels) == len(set(labels)) == rows["model"].nunique()


def test_write_figures_draws_each_run_once(tmp_path, results, monkeypatch):
    ref = tmp_path / "reference"
    shutil.copytree(results, ref / "copy")
    collected = collect(results / "manifest.tsv", reference=ref)
    assert collected[0]["hardware"].nunique() == 2
    seen = []
    monkeypatch.setattr(F, "BUILDERS", {"fig6_accuracy_vs_cost": lambda runs, *a, **k: seen.append(runs) or
                                        F.fig6_accuracy_vs_cost(runs, *a, **k)})
    F.write_figures(*collected, tmp_path / "f")
    assert seen[0]["hardware"].nunique() == 1
