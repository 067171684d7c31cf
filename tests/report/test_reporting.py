"""The reporting package on synthetic results folders (tests/report/conftest.py) with known numbers."""
import math
import shutil
from pathlib import Path

import pandas as pd
import pytest

from quadranet import cli
from quadranet.report import FIGURES, TABLES
from quadranet.report.claims import (COARSE, FAILS, FEW_SEEDS, HOLDS, INCONCLUSIVE, NOT_CONVERGED, START_MEETS,
                                     UNTESTABLE, c1_row, c2, c3, c4, c5, evaluate_claims, overall, write_claims)
from quadranet.report.collect import collect, load_collected, write_collected
from quadranet.report.savings import bracket, eval_lines, last_quarter_gain, savings, time_to_target
from quadranet.report.stats import binomial_se, paired, t_interval, t_quantile
from quadranet.report.tables import to_latex, to_markdown, write_tables

PAPER = str(Path(__file__).parents[2] / "workflow" / "paper_numbers.yaml")


@pytest.fixture(scope="session")
def collected(results):
    """(runs, curves, bench) of the shared results folder; tests do not modify them."""
    return collect(results / "manifest.tsv", sorted((results / "bench").glob("*.csv")))


def test_collect_labels_roles_and_reads_logs(collected):
    runs, curves, bench = collected
    assert set(runs["status"]) == {"done"}
    assert set(runs["exp"]) == {"pretrain", "e1", "e2", "e3", "e4"}
    # the manifest's method label wins over the engine's method (fo_scratch trains with method scratch)
    fo = runs[runs["method"] == "fo_scratch"]
    assert len(fo) == 6 and set(fo["cfg.method"]) == {"scratch"}
    assert runs["hardware"].iloc[0] == "this machine (Test CPU, 2 cores)"
    adapt = runs[(runs["exp"] == "e1") & (runs["method"] == "adapt")].set_index(["variant", "seed"])
    assert adapt.loc[("transfer", 0), "pretrained_run"] == "pretrain/convnext_atto/first_order/src100/seed0"
    assert adapt.loc[("intask", 2), "pretrained_run"] == "e1/convnext_atto/fo_scratch/intask/seed2"
    assert adapt["cost_s"].tolist() == pytest.approx([6.0] * 6)  # train + eval; start-up, initial evaluation apart
    assert adapt["quadratic_share.end.median"].tolist() == [0.05] * 6
    assert runs[runs["method"] == "scratch"]["quadratic_share.end.median"].isna().all()
    assert set(curves["event"]) == {"eval", "step"} and len(bench) == 4


def test_collect_takes_the_initial_evaluation_off_old_runs(tmp_path, synthetic):
    """Runs from before `device_seconds.initial_eval` counted the evaluation before training in `eval`."""
    root = tmp_path / "r"
    synthetic.write_run(root, "old", "adapt", old_layout=True)
    synthetic.write_run(root, "new", "adapt")
    pd.DataFrame([("e1", "b", "adapt", "transfer", 0, r) for r in ("old", "new")],
                 columns=["exp", "backbone", "method", "variant", "seed", "run"]).to_csv(
        root / "manifest.tsv", sep="\t", index=False)
    runs, curves, _ = collect(root / "manifest.tsv")
    assert runs["cost_s"].tolist() == pytest.approx([6.0, 6.0])
    lines = eval_lines(curves)
    key = runs["hardware"].iloc[0]
    assert lines[(key, "old")]["cost"].tolist() == lines[(key, "new")]["cost"].tolist() == [0.0, 3.0, 6.0]


def test_collect_marks_missing_runs(tmp_path, synthetic):
    synthetic.make_results(tmp_path / "r", missing=("e1/convnext_atto/lora/transfer/seed1",))
    runs, _, _ = collect(tmp_path / "r" / "manifest.tsv")
    missing = runs[runs["status"] == "missing"]
    assert missing["run"].tolist() == ["e1/convnext_atto/lora/transfer/seed1"]


def test_collect_adds_reference_hardware(tmp_path, results):
    ref = tmp_path / "reference" / "nvidia-h100"
    shutil.copytree(results, ref)
    runs, curves, bench = collect(results / "manifest.tsv", sorted((results / "bench").glob("*.csv")),
                                  tmp_path / "reference")
    assert set(runs["hardware"]) == {"this machine (Test CPU, 2 cores)", "nvidia-h100"}
    assert set(curves["hardware"]) == set(runs["hardware"]) and set(bench["hardware"]) == set(runs["hardware"])


def _ev(points):
    """Evaluation lines (step, cost, acc1) as eval_lines gives them; step 0 is the initial evaluation."""
    return pd.DataFrame(points, columns=["step", "cost", "acc1"]).assign(initial=lambda d: d["step"] == 0)


@pytest.mark.parametrize("points, target, expected", [
    ([(0, 0.0, 10.0), (10, 10.0, 60.0), (20, 20.0, 80.0)], 60.0, 10.0),  # first evaluation at or above
    ([(0, 0.0, 10.0), (10, 10.0, 60.0), (20, 20.0, 80.0)], 81.0, math.nan),  # never reached
    ([(0, 0.0, 90.0), (10, 10.0, 85.0), (20, 20.0, 88.0)], 80.0, 10.0),  # the initial evaluation never counts
    ([(0, 0.0, 90.0), (10, 10.0, 70.0), (20, 20.0, 88.0)], 80.0, 20.0),
])
def test_time_to_target(points, target, expected):
    got = time_to_target(_ev(points), target)
    assert math.isnan(got) if math.isnan(expected) else got == expected


@pytest.mark.parametrize("points, target, expected", [
    ([(0, 0.0, 10.0), (10, 10.0, 50.0), (20, 20.0, 80.0)], 60.0, (10.0, 20.0)),  # crossed between 10 and 20 s
    ([(0, 0.0, 10.0), (10, 10.0, 60.0), (20, 20.0, 80.0)], 60.0, (0.0, 10.0)),  # first evaluation: from 0 s
    ([(0, 0.0, 90.0), (10, 10.0, 70.0), (20, 20.0, 88.0)], 80.0, (10.0, 20.0)),  # the initial one never counts
])
def test_bracket_of_the_time_to_target(points, target, expected):
    assert bracket(_ev(points), target) == expected


@pytest.mark.parametrize("accs, gain", [
    ([10, 50, 70, 80, 84.6, 84.8, 84.9, 85.0, 85.0], 0.1),  # flat last quarter: from step 60 (75% of 80)
    ([10, 20, 30, 40, 50, 60, 70, 80, 90], 20.0),  # still climbing
    ([10, 50, 80, 85, 86], 1.0),  # steps 0..40: 75% is step 30
])
def test_last_quarter_gain(accs, gain):
    assert last_quarter_gain(_ev([(10 * i, float(i), a) for i, a in enumerate(accs)])) == pytest.approx(gain)


def _row(sv, variant):
    return sv[(sv["exp"] == "e1") & (sv["variant"] == variant)].iloc[0]


def test_savings_known_values(collected, synthetic):
    runs, curves, _ = collected
    sv = savings(runs, curves)
    row = _row(sv, "transfer")
    assert row["target_acc1"] == pytest.approx(84.5)  # mean final scratch top-1 (85.0, 85.5, 86.0) minus 1 pp
    assert row["tolerance_pp"] == 1.0 and "minus 1 pp" in row["target_rule"]
    assert row["converged"] and row["scratch_last_quarter_gain_pp"] == pytest.approx(0.1)
    assert row["t_adapt_s"] == 3.0 and row["t_scratch_s"] == 40.0 and row["t_fo_scratch_s"] == 60.0
    assert row["savings_to_target"] == pytest.approx(1 - 3 / 40)
    assert (row["savings_lo"], row["savings_hi"], row["savings_seed_n"]) == (pytest.approx(1 - 3 / 40),) * 2 + (3,)
    assert row["savings_pessimistic"] <= row["savings_seed_mean"] <= row["savings_optimistic"]  # the bracket
    assert row["savings_full_schedule"] == pytest.approx(1 - 6 / 80)  # whole runs: 6 s vs 80 s
    assert row["savings_vs_fo_scratch"] == pytest.approx(1 - 3 / 60)
    assert row["pretrain_s"] == synthetic.PRETRAIN_S
    assert row["savings_incl_pretraining"] == pytest.approx(1 - (3 + synthetic.PRETRAIN_S) / 40)
    assert not row["start_meets_target"] and row["start_acc1"] == pytest.approx(10.5)
    intask = _row(sv, "intask")  # starts at 86.5 > 84.5, still timed from its first evaluation after training
    assert intask["start_meets_target"] and intask["t_adapt_s"] == 3.0
    assert intask["pretrain_s"] == 80.0  # its own fo_scratch run on the target task


def test_savings_tolerance_moves_the_target(collected):
    runs, curves, _ = collected
    row = _row(savings(runs, curves, tolerance_pp=0.0), "transfer")
    assert row["target_acc1"] == pytest.approx(85.5)  # seed 0's scratch (85.0 at the end) never reaches it
    assert (row["scratch_reached"], row["adapt_reached"]) == (2, 3)
    assert row["t_scratch_s"] == pytest.approx((70 + 40) / 2)  # seed 1 (85.5 at 70 s), seed 2 (85.6 at 40 s)


def test_savings_flags_a_baseline_that_still_climbs(tmp_path, synthetic):
    root = tmp_path / "r"
    climbing = [(10 * i, 10.0 + 10 * i) for i in range(1, 9)]  # +20 pp over the last quarter
    synthetic.make_results(root, missing=[synthetic.e1_run("scratch", s, k) for s in ("intask", "transfer")
                                          for k in synthetic.SEEDS])
    for k in synthetic.SEEDS:
        synthetic.write_run(root, synthetic.e1_run("scratch", "transfer", k), "scratch", k, curve=climbing)
    runs, curves, _ = collect(root / "manifest.tsv")
    row = _row(savings(runs, curves), "transfer")
    assert not row["converged"] and row["scratch_last_quarter_gain_pp"] == pytest.approx(20.0)
    claims = evaluate_claims(runs, curves, pd.DataFrame(), PAPER, "test").set_index("claim")
    assert claims.loc["C1", "verdict"] == NOT_CONVERGED and "NOT converged" in claims.loc["C1", "ours"]


def test_tables_written_in_three_formats(collected, tmp_path):
    names = write_tables(*collected, tmp_path)
    assert names == list(TABLES)
    for name in TABLES:
        for ext in ("csv", "md", "tex"):
            assert (tmp_path / f"{name}.{ext}").stat().st_size > 0
    t1 = pd.read_csv(tmp_path / "table1_adaptation.csv")
    adapt = t1[(t1["method"] == "adapt") & (t1["variant"] == "transfer")].iloc[0]
    assert adapt["savings_to_target"] == pytest.approx(0.925) and adapt["vs_scratch_mean"] == pytest.approx(3.0)
    assert adapt["qs_end_mean"] == pytest.approx(0.05) and adapt["acc1_binomial_se"] == pytest.approx(
        100 * math.sqrt(0.885 * 0.115 / 500))
    assert set(t1["method"]) == {"scratch", "v1_scratch", "fo_scratch", "adapt", "finetune", "lora", "head"}
    md = (tmp_path / "table1_adaptation.md").read_text()
    assert "92.5%" in md and "85.50 ± 0.41" in md and "minus 1 pp" in md and "converged" in md
    assert "0.050 (0.000→0.050)" in md
    assert "not run" in (tmp_path / "table3_coco.md").read_text()
    t4 = pd.read_csv(tmp_path / "table4_ablations.csv")
    assert set(t4["variant"]) == {"base", "rank1", "two_stage"} and (t4["qs_end_mean"] == 0.05).all()
    t2 = pd.read_csv(tmp_path / "table2_pretraining_scale.csv")
    assert t2[t2["variant"] == "src100"]["savings_to_target"].iloc[0] == pytest.approx(0.925)


def test_markdown_and_latex_writers():
    df = pd.DataFrame({"a_b": ["x & y", "85 ± 1"], "c": [1, None]})
    md = to_markdown(df)
    assert md.splitlines()[0] == "| a_b | c |" and md.splitlines()[1] == "| --- | --- |"
    tex = to_latex(df, "50% of it", "t")
    assert r"a\_b" in tex and r"x \& y" in tex and r"85 $\pm$ 1" in tex and r"50\% of it" in tex


def test_figures_written(collected, tmp_path):
    from quadranet.report.figures import write_figures

    write_figures(*collected, tmp_path)
    for name in FIGURES:
        for ext in ("png", "pdf"):
            assert (tmp_path / f"{name}.{ext}").stat().st_size > 1000


def test_figures_on_empty_results(tmp_path):
    from quadranet.report.figures import write_figures

    empty = pd.DataFrame(columns=["hardware", "exp", "run", "status", "method"])
    write_figures(empty, pd.DataFrame(columns=["hardware", "run", "event"]), pd.DataFrame(), tmp_path)
    assert all((tmp_path / f"{name}.png").is_file() for name in FIGURES)


def test_claims_verdicts(collected, tmp_path):
    claims = evaluate_claims(*collected, PAPER, "test").set_index("claim")
    assert list(claims.index) == [f"C{i}" for i in range(1, 9)]
    # C1: the transfer row holds (92.5% in every seed); the intask row starts above the target: no support
    assert claims.loc["C1", "verdict"] == HOLDS
    assert f"intask [{collected[0]['hardware'].iloc[0]}]: {START_MEETS}" in claims.loc["C1", "ours"]
    assert claims.loc["C2", "verdict"] == HOLDS  # adapt 3 pp above scratch in every seed
    assert claims.loc["C4", "verdict"] == UNTESTABLE
    assert claims.loc["C5", "verdict"] == HOLDS  # D = 5.0, 5.3, 5.6 pp over seeds
    assert claims.loc["C6", "verdict"] == HOLDS
    assert claims.loc["C7", "verdict"] == HOLDS  # memeff keeps 11 MB vs 14
    assert "98.4%" in claims.loc["C1", "paper"] and "(not public)" in claims.loc["C2", "paper"]
    write_claims(claims.reset_index(), tmp_path / "claims.md")
    text = (tmp_path / "claims.md").read_text()
    assert all(f"## C{i}:" in text for i in range(1, 9)) and (tmp_path / "claims.csv").is_file()
    assert "+3.00 [+3.00, +3.00] pp (n=3)" in text  # C2 prints every interval


def test_t_quantile_and_interval_known_values():
    assert t_quantile(0.95, 2) == pytest.approx(4.303, abs=5e-4)
    assert t_quantile(0.95, 4) == pytest.approx(2.776, abs=5e-4)
    assert t_quantile(0.95, 1) == pytest.approx(12.706, abs=5e-4)
    assert t_quantile(0.95, 1000) == pytest.approx(1.962, abs=5e-4)
    iv = t_interval([1.0, 2.0, 3.0])
    assert (iv["n"], iv["mean"], iv["sd"]) == (3, 2.0, 1.0) and iv["half"] == pytest.approx(4.303 / math.sqrt(3), 1e-4)
    assert math.isnan(t_interval([5.0])["lo"])
    assert binomial_se(50.0, 100) == pytest.approx(5.0) and math.isnan(binomial_se(50.0, 0))


def test_paired_difference_by_seed():
    runs = pd.DataFrame({"g": "x", "method": ["a", "a", "a", "b", "b"], "seed": [0, 1, 2, 0, 1],
                         "acc1": [10.0, 12.0, 99.0, 9.0, 9.0]})
    row = paired(runs, "acc1", "a", "b", ["g"]).iloc[0]
    assert row["n"] == 2 and row["mean"] == 2.0 and row["diffs"] == [1.0, 3.0]  # seed 2 has no partner


@pytest.mark.parametrize("row, verdict", [
    (dict(start_meets_target=True, converged=True, adapt_reached=3, seeds=3, savings_lo=0.95), START_MEETS),
    (dict(start_meets_target=False, converged=False, adapt_reached=3, seeds=3, savings_lo=0.95), NOT_CONVERGED),
    (dict(start_meets_target=False, converged=True, adapt_reached=2, seeds=3, savings_lo=0.95), FAILS),
    (dict(start_meets_target=False, converged=True, adapt_reached=3, seeds=3, savings_lo=0.91), HOLDS),
    (dict(start_meets_target=False, converged=True, adapt_reached=3, seeds=3, savings_lo=0.80, savings_hi=0.89),
     FAILS),
    (dict(start_meets_target=False, converged=True, adapt_reached=3, seeds=3, savings_lo=0.85), INCONCLUSIVE),
    # a verdict on the measured savings that the evaluation bracket's far end does not share is no verdict
    (dict(start_meets_target=False, converged=True, adapt_reached=3, seeds=3, savings_lo=0.91,
          savings_pessimistic_lo=0.7), COARSE),
    (dict(start_meets_target=False, converged=True, adapt_reached=3, seeds=3, savings_lo=0.50, savings_hi=0.6,
          savings_optimistic_hi=1.0), COARSE),
])
def test_c1_row_verdicts(row, verdict):
    assert c1_row({"savings_seed_n": 3, "savings_hi": 0.99, "savings_pessimistic_lo": 0.95,
                   "savings_optimistic_hi": 0.5, **row}) == verdict


@pytest.mark.parametrize("verdicts, expected", [
    ([HOLDS, START_MEETS], HOLDS), ([START_MEETS], UNTESTABLE), ([HOLDS, FAILS, INCONCLUSIVE], FAILS),
    ([HOLDS, NOT_CONVERGED], NOT_CONVERGED), ([NOT_CONVERGED, FEW_SEEDS], INCONCLUSIVE), ([], UNTESTABLE),
])
def test_overall_verdict(verdicts, expected):
    assert overall(verdicts) == expected


@pytest.mark.parametrize("adapt, scratch, verdict", [
    ([80.0, 81.0, 82.0], [80.5, 81.5, 82.5], HOLDS),  # 0.5 pp below in every seed: competitive
    ([77.0, 78.0, 79.0], [80.5, 81.5, 82.5], FAILS),  # 3.5 pp below in every seed
    ([76.5, 81.5, 80.5], [80.5, 81.5, 82.5], INCONCLUSIVE),  # -4, 0, -2: interval [-6.97, +2.97]
    ([80.0], [80.5], FEW_SEEDS),
])
def test_claim_c2_on_paired_intervals(adapt, scratch, verdict):
    rows = [dict(method=m, seed=s, acc1=a) for m, accs in (("adapt", adapt), ("scratch", scratch))
            for s, a in enumerate(accs)]
    runs = pd.DataFrame(rows).assign(hardware="hw", status="done", exp="e1", backbone="b", variant="transfer")
    ours, got, rule = c2(runs, pd.DataFrame(), pd.DataFrame())
    assert got == verdict and "inconclusive" in rule and "(n=" in ours


def test_claim_c5_drops_out_of_band_shifts(collected):
    runs, curves, bench = collected
    ours, verdict, rule = c5(runs, curves, bench)
    assert verdict == HOLDS and "[30, 65]" in rule
    assert "solarize 1 (10.0%)" in ours and "contrast 0.5 (70.0%)" in ours and "brightness 1 (20.0%)" in ours
    assert "brightness 0.5 (adapt - lora +1.00 pp)" in ours and "gamma 1 (adapt - lora +6.30 pp)" in ours
    assert "+5.30 [" in ours and "head-only control" in ours
    assert c5(runs, curves, bench, band=(0, 100))[1] == FAILS  # solarize (-20) and brightness 1.0 (-10) kept
    assert c5(runs, curves, bench, band=(45, 65))[1] == INCONCLUSIVE  # gamma at 0.5 only: D = -1, -0.7, -0.4
    assert c5(runs, curves, bench, band=(58, 65))[1] == UNTESTABLE  # brightness 0.5 only


def test_claim_c6_fails_when_initial_accuracy_differs(tmp_path, synthetic):
    root = tmp_path / "r"
    run = synthetic.e1_run("finetune", "transfer", 0)
    synthetic.make_results(root, missing=(run,))
    synthetic.write_run(root, run, "finetune", start=9.0)
    claims = evaluate_claims(*collect(root / "manifest.tsv"), PAPER, "test").set_index("claim")
    assert claims.loc["C6", "verdict"] == FAILS


def test_cli_commands(results, tmp_path, capsys):
    out = tmp_path / "collected"
    bench = [str(p) for p in sorted((results / "bench").glob("*.csv"))]
    assert cli.main(["collect", "--manifest", str(results / "manifest.tsv"), "--bench", *bench,
                     "--reference", str(tmp_path / "none"), "--out-dir", str(out)]) == 0
    runs, curves, bench_df = load_collected(out)
    assert len(runs) and len(curves) and len(bench_df)
    assert cli.main(["tables", "--collected", str(out), "--out-dir", str(tmp_path / "tables")]) == 0
    assert cli.main(["tables", "--collected", str(out), "--out-dir", str(tmp_path / "t2"), "--tolerance-pp", "0"]) == 0
    assert pd.read_csv(tmp_path / "t2" / "table1_adaptation.csv")["target_acc1"].max() == pytest.approx(85.5)
    assert cli.main(["claims", "--collected", str(out), "--paper", PAPER, "--scale", "test",
                     "--out", str(tmp_path / "claims.md")]) == 0
    assert "C1: holds" in capsys.readouterr().out
    assert cli.main(["claims", "--collected", str(out), "--paper", PAPER, "--scale", "test", "--competitive-pp", "1",
                     "--tolerance-pp", "2", "--band", "58", "65", "--out", str(tmp_path / "c2.md")]) == 0
    text = capsys.readouterr().out
    assert "C1: holds" in text and f"C5: {UNTESTABLE}" in text
    assert "minus 2 pp" in (tmp_path / "c2.md").read_text()


def test_write_collected_roundtrip_with_empty_bench(collected, tmp_path):
    runs, curves, _ = collected
    write_collected(tmp_path, runs, curves, pd.DataFrame())
    r, c, b = load_collected(tmp_path)
    assert len(r) == len(runs) and len(c) == len(curves) and b.empty


def test_claim_c3_on_imagenet21k_pretraining_compares_the_largest_source_with_scratch():
    def runs(dataset, adapt_largest):
        rows = [dict(exp="pretrain", method="first_order", variant=f"src{n}", seed=0, acc1=50.0,
                     **{"cfg.data.dataset": dataset}) for n in (50, 1000)]
        for seed in (0, 1):
            rows += [dict(exp="e2", method="adapt", variant="src50", seed=seed, acc1=70.0),
                     dict(exp="e2", method="adapt", variant="src1000", seed=seed, acc1=adapt_largest + seed),
                     dict(exp="e2", method="scratch", variant="none", seed=seed, acc1=80.0 + seed)]
        return pd.DataFrame(rows).assign(hardware="hw", status="done", backbone="convnext_tiny")

    empty = pd.DataFrame()
    ours, verdict, _ = c3(runs("imagenet21k", 79.5), empty, empty)
    assert verdict == HOLDS and "1000 images/class: 80.00%" in ours and "50 images/class: 70.00%" in ours
    assert "-0.50 [-0.50, -0.50] pp (n=2)" in ours
    assert c3(runs("imagenet21k", 78.0), empty, empty)[1] == FAILS  # 2 pp below scratch; 70% at src50 is ignored
    assert c3(runs("fashion_mnist", 79.5), empty, empty)[1] == UNTESTABLE


def test_coco_table_and_claim_c4_use_ap_points():
    from quadranet.report.tables import table3_coco

    def runs(adapt_ap, seeds=(0, 1)):
        rows = [dict(method=m, seed=s, box_ap=ap, mask_ap=ap - 0.01, cost_s=100.0)
                for m, ap in (("adapt", adapt_ap), ("scratch", 0.30)) for s in seeds]
        return pd.DataFrame(rows).assign(hardware="hw", status="done", exp="coco", backbone="efficientnet_lite0",
                                         variant="base")

    _, shown, _ = table3_coco(runs(0.45), pd.DataFrame(), pd.DataFrame())
    assert list(shown[shown["method"] == "adapt"]["box AP"]) == ["45.00 ± 0.00"]
    empty = pd.DataFrame()
    ours, verdict, _ = c4(runs(0.295), empty, empty)
    assert verdict == HOLDS and "-0.50" in ours  # half an AP point below scratch: competitive
    assert c4(runs(0.28), empty, empty)[1] == FAILS  # two AP points below
    ours, verdict, _ = c4(runs(0.295, seeds=(0,)), empty, empty)
    assert verdict == FEW_SEEDS and "no interval" in ours


def test_reports_with_only_scratch_and_adapt(tmp_path, synthetic):
    """Absent methods (fo_scratch, finetune, lora, head, v1_scratch) leave their columns empty, nothing breaks."""
    from quadranet.report.figures import write_figures

    synthetic.make_results(tmp_path / "r", methods=("scratch", "adapt"))
    collected = collect(tmp_path / "r" / "manifest.tsv")
    write_tables(*collected, tmp_path / "t")
    row = pd.read_csv(tmp_path / "t" / "table1_adaptation.csv").query("method == 'adapt' and variant == 'transfer'")
    assert row["savings_to_target"].iloc[0] == pytest.approx(0.925) and row["savings_vs_fo_scratch"].isna().all()
    claims = evaluate_claims(*collected, PAPER, "test").set_index("claim")
    assert claims.loc["C1", "verdict"] == claims.loc["C2", "verdict"] == HOLDS
    write_figures(*collected, tmp_path / "f")
    assert all((tmp_path / "f" / f"{name}.png").is_file() for name in FIGURES)


def test_table1_shows_energy_with_its_label(collected):
    runs, curves, bench = collected
    runs = runs.copy()
    runs["energy_kwh"], runs["co2e_kg"] = 2e-3, 1e-3  # 2 Wh, 1 g per run
    runs["energy_source"] = "estimated: CodeCarbon 3.3.2 offline tracker, process mode, CPU power mode cpu_load"
    from quadranet.report.tables import table1_adaptation

    s, shown, notes = table1_adaptation(runs, curves, bench)
    assert s["energy_wh_mean"].tolist() == pytest.approx([2.0] * len(s)) and set(shown["energy is"]) == {"estimated"}
    assert set(shown["CO2e (g)"]) == {"1.000"} and any("CodeCarbon" in n for n in notes)
    # savings in energy too, with the label (C1's line in claims.md is the same describe())
    assert any("energy (ours, estimated): adapt 2 Wh vs scratch 2 Wh per run, full-schedule energy savings 0.0%" in n
               for n in notes)
    from quadranet.report.figures import fig6_accuracy_vs_cost

    fig = fig6_accuracy_vs_cost(runs, curves, bench)
    labels = [t.get_text() for ax in fig.axes if ax.get_legend() for t in ax.get_legend().get_texts()]
    assert any("full-schedule energy savings 0% (estimated)" in t for t in labels)
    _, old, _ = table1_adaptation(*collected)  # runs without energy (before issue 16): empty cells, no error
    assert set(old["energy (Wh)"]) == {""} and set(old["energy is"]) == {""}
