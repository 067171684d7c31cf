"""The reporting package on synthetic results folders (tests/report/conftest.py) with known numbers."""
import math
import shutil
from pathlib import Path

import pandas as pd
import pytest

from quadranet import cli
from quadranet.report import FIGURES, TABLES
from quadranet.report.claims import (COARSE, FAILS, FEW_SEEDS, HOLDS, INCONCLUSIVE, NOT_CONVERGED, START_MEETS,
                                     UNTESTABLE, c1_row, c2, c3, c4, c5, c8, evaluate_claims, overall, write_claims)
from quadranet.report.collect import collect, count_once, load_collected, write_collected
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
    # training seconds: logged by new runs, worked out for old ones (each evaluation's time taken off)
    assert lines[(key, "old")]["cost"].tolist() == lines[(key, "new")]["cost"].tolist() == [0.0, 2.5, 5.0]
    assert lines[(key, "new")]["cost_with_eval"].tolist() == [0.0, 3.0, 6.0]


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


def test_a_run_held_by_two_references_counts_once(tmp_path, results, synthetic):
    """A reference that holds another's runs (same config, same result) is their superset: they count once."""
    ref = tmp_path / "reference"
    shutil.copytree(results, ref / "big")
    shutil.copytree(results, ref / "small")
    small = pd.read_csv(ref / "small" / "manifest.tsv", sep="\t")
    small[small["exp"] != "e3"].to_csv(ref / "small" / "manifest.tsv", sep="\t", index=False)
    synthetic.write_run(ref / "other", "e1/x/adapt/transfer/seed0", "adapt")  # a run nobody else holds
    pd.DataFrame([("e1", "x", "adapt", "transfer", 0, "e1/x/adapt/transfer/seed0")],
                 columns=["exp", "backbone", "method", "variant", "seed", "run"]).to_csv(
        ref / "other" / "manifest.tsv", sep="\t", index=False)
    runs, _, _ = collect(results / "manifest.tsv", reference=ref)
    kept, notes = count_once(runs)
    assert set(kept["hardware"]) == {"big", "other"}  # this machine's and small's runs are big's, to the image
    assert len(kept[kept["hardware"] == "big"]) == len(runs[runs["hardware"] == "big"])
    assert any(n.startswith("small: ") and "also big's" in n for n in notes)
    claims = evaluate_claims(runs, pd.DataFrame(columns=["hardware", "run", "event"]), pd.DataFrame(), PAPER, "t")
    assert "counted once, as big's" in claims["scale"].iloc[0]


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
    # training seconds, evaluation apart (each evaluation takes 0.5 s in these logs)
    assert row["t_adapt_s"] == 2.5 and row["t_scratch_s"] == 38.0 and row["t_fo_scratch_s"] == 58.5
    assert row["savings_to_target"] == pytest.approx(1 - 2.5 / 38)
    assert (row["savings_lo"], row["savings_hi"], row["savings_seed_n"]) == (pytest.approx(1 - 2.5 / 38),) * 2 + (3,)
    assert row["savings_to_target_with_eval"] == pytest.approx(1 - 3 / 40)  # the secondary view counts evaluation
    assert row["savings_pessimistic"] <= row["savings_seed_mean"] <= row["savings_optimistic"]  # the bracket
    assert row["savings_full_schedule"] == pytest.approx(1 - 4.8 / 64)  # whole runs' training: 4.8 s vs 64 s
    assert row["savings_full_schedule_with_eval"] == pytest.approx(1 - 6 / 80)
    assert row["savings_vs_fo_scratch"] == pytest.approx(1 - 2.5 / 58.5)
    assert row["pretrain_s"] == 0.8 * synthetic.PRETRAIN_S  # its training seconds
    assert row["savings_incl_pretraining"] == pytest.approx(1 - (2.5 + 0.8 * synthetic.PRETRAIN_S) / 38)
    assert not row["start_meets_target"] and row["start_acc1"] == pytest.approx(10.5)
    intask = _row(sv, "intask")  # starts at 86.5 > 84.5, still timed from its first evaluation after training
    assert intask["start_meets_target"] and intask["t_adapt_s"] == 2.5
    assert intask["pretrain_s"] == 64.0  # its own fo_scratch run on the target task


def test_savings_tolerance_moves_the_target(collected):
    runs, curves, _ = collected
    row = _row(savings(runs, curves, tolerance_pp=0.0), "transfer")
    assert row["target_acc1"] == pytest.approx(85.5)  # seed 0's scratch (85.0 at the end) never reaches it
    assert (row["scratch_reached"], row["adapt_reached"]) == (2, 3)
    assert row["t_scratch_s"] == pytest.approx((66.5 + 38) / 2)  # seed 1 (85.5 at 70 s), seed 2 (85.6 at 40 s)


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
    assert claims.loc["C1", "verdict"] == NOT_CONVERGED and "NOT converged" in claims.loc["C1", "details"]


def test_tables_written_in_three_formats(collected, tmp_path):
    names = write_tables(*collected, tmp_path)
    assert names == list(TABLES)
    for name in TABLES:
        for ext in ("csv", "md", "tex"):
            assert (tmp_path / f"{name}.{ext}").stat().st_size > 0
    t1 = pd.read_csv(tmp_path / "table1_adaptation.csv")
    adapt = t1[(t1["method"] == "adapt") & (t1["variant"] == "transfer")].iloc[0]
    assert adapt["savings_to_target"] == pytest.approx(1 - 2.5 / 38) and adapt["vs_scratch_mean"] == pytest.approx(3.0)
    assert adapt["qs_end_mean"] == pytest.approx(0.05) and adapt["acc1_binomial_se"] == pytest.approx(
        100 * math.sqrt(0.885 * 0.115 / 500))
    assert set(t1["method"]) == {"scratch", "v1_scratch", "fo_scratch", "adapt", "finetune", "lora", "head"}
    lora = t1[(t1["method"] == "lora") & (t1["variant"] == "transfer")].iloc[0]
    assert lora["tt_reached"] == 0 and lora["vs_scratch_mean"] == pytest.approx(-5.0)  # the controls are in it
    md = (tmp_path / "table1_adaptation.md").read_text()
    header = next(line for line in md.splitlines() if line.startswith("| backbone"))
    assert header.count("|") - 1 <= 12  # readable: at most 12 columns (the CSV keeps all)
    assert "93.4 [93.4, 93.4] (n=3)" in md and "85.50 ± 1.24" in md and "minus 1 pp" in md and "converged" in md
    assert "2.5 (3/3)" in md and "never (0/3)" in md  # adapt's time to target; lora never reaches it
    assert "not run" in (tmp_path / "table3_coco.md").read_text()
    t4 = pd.read_csv(tmp_path / "table4_ablations.csv")
    assert set(t4["variant"]) == {"base", "rank1", "two_stage"} and (t4["qs_end_mean"] == 0.05).all()
    t2 = pd.read_csv(tmp_path / "table2_pretraining_scale.csv")
    assert t2[t2["variant"] == "src100"]["savings_to_target"].iloc[0] == pytest.approx(1 - 2.5 / 38)


def test_markdown_and_latex_writers():
    df = pd.DataFrame({"a_b": ["x & y", "85 ± 1"], "c": [1, None]})
    md = to_markdown(df)
    assert md.splitlines()[0] == "| a_b | c |" and md.splitlines()[1] == "| --- | --- |"
    tex = to_latex(df, "50% of it", "t")
    assert r"a\_b" in tex and r"x \& y" in tex and r"85 $\pm$ 1" in tex and r"50\% of it" in tex


@pytest.mark.slow
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
    assert list(claims.index) == [f"C{i}" for i in range(1, 10)] + ["A1", "A2"]
    # C1: the transfer row holds (93.4% in every seed); the intask row starts above the target: no support
    assert claims.loc["C1", "verdict"] == HOLDS
    assert f"intask [{collected[0]['hardware'].iloc[0]}]: {START_MEETS}" in claims.loc["C1", "details"]
    assert claims.loc["C1", "ours"] == "convnext_atto transfer: +93.4 [+93.4, +93.4]% (adapt reached 3/3)"
    # C2: adapt 3 pp above scratch in every seed on transfer; intask starts above the target: untestable there
    assert claims.loc["C2", "verdict"] == HOLDS and f"{START_MEETS}" in claims.loc["C2", "details"]
    assert "adapt - start" in claims.loc["C2", "details"]
    assert claims.loc["C4", "verdict"] == UNTESTABLE
    assert claims.loc["C5", "verdict"] == HOLDS  # gamma 1.0, the one nonlinear shift in the band: +6.0 to +6.6 pp
    assert claims.loc["C6", "verdict"] == HOLDS
    assert claims.loc["C7", "verdict"] == HOLDS  # memeff keeps 11 MB vs 14
    # A1: adapt ends above finetune, LoRA and head in every seed; A2: quadratic and first-order scratch tie
    assert claims.loc["A1", "verdict"] == HOLDS and claims.loc["A2", "verdict"] == INCONCLUSIVE
    assert "lora reached 84.50% in 0/3 seeds" in claims.loc["A1", "details"]
    assert "98.4%" in claims.loc["C1", "paper"] and "(not public)" in claims.loc["C2", "paper"]
    write_claims(claims.reset_index(), tmp_path / "claims.md")
    text = (tmp_path / "claims.md").read_text()
    assert all(f"## {c}:" in text for c in claims.index) and (tmp_path / "claims.csv").is_file()
    assert "+3.00 [+3.00, +3.00] pp (n=3)" in text  # C2 prints every interval
    first = text.split("\n\n")[2]  # the summary table: one row per claim, no cell over 300 characters
    assert first.count("\n") == len(claims) + 1
    assert all(len(cell) <= 300 for line in first.splitlines() for cell in line.split(" | "))


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
    f = c2(runs, pd.DataFrame(), pd.DataFrame())
    assert f.verdict == verdict and "inconclusive" in f.rule and "(n=" in f.details


def test_claim_c2_is_untestable_where_the_start_already_meets_the_target():
    rows = [dict(method=m, seed=s, acc1=a, initial_acc1=start) for m, a, start in
            (("adapt", 80.0, 80.2), ("scratch", 80.5, 10.0)) for s in range(3)]
    runs = pd.DataFrame(rows).assign(hardware="hw", status="done", exp="e1", backbone="b", variant="intask")
    f = c2(runs, pd.DataFrame(), pd.DataFrame())
    assert f.verdict == UNTESTABLE and START_MEETS in f.details and "adapt - start -0.20" in f.details


def test_claim_c5_drops_out_of_band_shifts(collected):
    runs, curves, bench = collected
    f = c5(runs, curves, bench, band=(30, 65))
    assert f.verdict == HOLDS and "[30, 65]" in f.rule  # gamma 1.0, the one kept nonlinear shift: +6.0, +6.3, +6.6
    ours = f.details
    assert "solarize 1 (10.0%)" in ours and "contrast 0.5 (70.0%)" in ours and "brightness 1 (20.0%)" in ours
    assert "brightness 0.5 (adapt - lora +1.00 pp)" in ours and "gamma 1 (adapt - lora +6.30 pp)" in ours
    assert "A = mean over nonlinear shifts of adapt - lora: +6.30 [" in ours
    assert "secondary D = A minus the linear shifts' mean: +5.30 [" in ours and "head-only control" in ours
    assert c5(runs, curves, bench, band=(0, 100)).verdict == FAILS  # solarize (-20) kept beside gamma
    assert c5(runs, curves, bench, band=(45, 65)).verdict == INCONCLUSIVE  # gamma at 0.5 only: 0, +0.3, +0.6
    assert c5(runs, curves, bench, band=(58, 65)).verdict == UNTESTABLE  # brightness 0.5 only: no nonlinear shift


def test_claim_c5_tests_adapt_against_lora_on_nonlinear_shifts_not_a_difference_of_differences():
    """The adapter loses to LoRA on every shift, most on a linear one: the old rule (D = nonlinear minus linear
    advantage) said 'holds'; the claim's own test (adapt - LoRA on the nonlinear shifts) does not."""
    adv = {"brightness": -0.9, "contrast": -5.9, "gamma": 0.0, "solarize": -0.3}  # cpu_long at 439653a, per shift
    rows = []
    for seed in range(5):
        for shift, a in adv.items():
            wobble = 0.2 * (seed - 2)
            rows += [dict(method="lora", seed=seed, acc1=70.0, initial_acc1=50.0, shift=shift),
                     dict(method="adapt", seed=seed, acc1=70.0 + a + wobble, initial_acc1=50.0, shift=shift)]
    runs = pd.DataFrame(rows).assign(hardware="hw", status="done", exp="e3", backbone="b", variant="v")
    runs = runs.assign(**{"cfg.data.shift": runs.pop("shift"), "cfg.data.shift_strength": 1.0})
    f = c5(runs, pd.DataFrame(), pd.DataFrame())
    assert "secondary D = A minus the linear shifts' mean: +3.25 [" in f.details  # D's interval is above 0
    assert f.verdict == INCONCLUSIVE and "A = mean over nonlinear shifts of adapt - lora: -0.15 [" in f.details


def test_claim_c6_fails_when_initial_accuracy_differs(tmp_path, synthetic):
    root = tmp_path / "r"
    run = synthetic.e1_run("finetune", "transfer", 0)
    synthetic.make_results(root, missing=(run,))
    synthetic.write_run(root, run, "finetune", start=9.0)
    claims = evaluate_claims(*collect(root / "manifest.tsv"), PAPER, "test").set_index("claim")
    assert claims.loc["C6", "verdict"] == FAILS


@pytest.mark.slow
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
    f = c3(runs("imagenet21k", 79.5), empty, empty)
    assert f.verdict == HOLDS and "on 50 images/class: adapt - scratch top-1 -10.50 [" in f.details
    assert "largest source set: " in f.details and "-0.50 [-0.50, -0.50] pp (n=2)" in f.details
    assert c3(runs("imagenet21k", 78.0), empty, empty).verdict == FAILS  # 2 pp below scratch; src50 is ignored
    f = c3(runs("fashion_mnist", 79.5), empty, empty)
    assert f.verdict == UNTESTABLE and "1000/class: -0.50 [-0.50, -0.50] pp" in f.ours  # the proxy, shown


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
    f = c4(runs(0.295), empty, empty)
    assert f.verdict == HOLDS and "-0.50" in f.ours  # half an AP point below scratch: competitive
    assert c4(runs(0.28), empty, empty).verdict == FAILS  # two AP points below
    f = c4(runs(0.295, seeds=(0,)), empty, empty)
    assert f.verdict == FEW_SEEDS and "no interval" in f.ours


@pytest.mark.slow
def test_reports_with_only_scratch_and_adapt(tmp_path, synthetic):
    """Absent methods (fo_scratch, finetune, lora, head, v1_scratch) leave their columns empty, nothing breaks."""
    from quadranet.report.figures import write_figures

    synthetic.make_results(tmp_path / "r", methods=("scratch", "adapt"))
    collected = collect(tmp_path / "r" / "manifest.tsv")
    write_tables(*collected, tmp_path / "t")
    row = pd.read_csv(tmp_path / "t" / "table1_adaptation.csv").query("method == 'adapt' and variant == 'transfer'")
    assert row["savings_to_target"].iloc[0] == pytest.approx(1 - 2.5 / 38) and row["savings_vs_fo_scratch"].isna().all()
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

    s, shown, notes = table1_adaptation(runs, curves, bench)  # energy lives in the CSV (the data), with its label
    assert s["energy_wh_mean"].tolist() == pytest.approx([2.0] * len(s)) and set(s["energy_how"]) == {"estimated"}
    assert s["co2e_g_mean"].tolist() == pytest.approx([1.0] * len(s)) and any("CodeCarbon" in n for n in notes)
    adapt = s[(s["method"] == "adapt") & (s["variant"] == "transfer")].iloc[0]
    assert adapt["energy_savings_full_schedule"] == 0.0 and adapt["energy_savings_how"] == "estimated"
    old, _, _ = table1_adaptation(*collected)  # runs without energy (before energy was tracked): empty cells, no error
    assert old["energy_wh_mean"].isna().all() and set(old["energy_how"]) == {""}


def test_claim_c5_prints_the_rbf_adapter_against_bilinear_on_nonlinear_shifts_without_judging_it():
    """E3's adapt_rbf label (cpu_long): rbf - bilinear over the kept nonlinear shifts, paired by seed, is printed;
    the verdict stays adapt (bilinear) - LoRA's."""
    rows = []
    for seed in range(3):
        for shift in ("gamma", "solarize", "brightness"):
            rbf = 73.0 + (0.0 if shift == "brightness" else 0.1 * seed)
            rows += [dict(method=m, seed=seed, acc1=acc, params_added=n, shift=shift, initial_acc1=50.0)
                     for m, acc, n in (("lora", 70.0, 504), ("adapt", 71.0 + 0.1 * seed, 480), ("adapt_rbf", rbf, 410))]
    runs = pd.DataFrame(rows).assign(hardware="hw", status="done", exp="e3", backbone="b", variant="v")
    runs = runs.assign(**{"cfg.data.shift": runs.pop("shift"), "cfg.data.shift_strength": 1.0})
    f = c5(runs, pd.DataFrame(), pd.DataFrame())
    assert f.verdict == HOLDS and "adapt - lora: +1.10 [" in f.details  # adapt - LoRA: +1.0, +1.1, +1.2
    # rbf - bilinear on gamma and solarize only (brightness is linear): +2.00 in every seed
    assert "minus bilinear's: +2.00 [+2.00, +2.00] pp" in f.details
    assert "410 added parameters, bilinear 480" in f.details
    assert "minus LoRA's: +3.10 [" in f.details  # rbf - LoRA on gamma and solarize: +3.0, +3.1, +3.2


def _c8_inputs(v1_acc, peer_acc, v1_ms=10.0, peer_ms=12.0, v1_kept=5.0, peer_kept=8.0, iqr=0.2):
    """E1 runs from scratch of QuadraNet V1 and HorNet at size 'test', and one bench CSV measuring both."""
    rows = [dict(run=f"{arch}/seed{s}", seed=s, acc1=a, **{"cfg.model.arch": arch})
            for arch, accs in (("quadranet_v1_test", v1_acc), ("hornet_test", peer_acc)) for s, a in enumerate(accs)]
    runs = pd.DataFrame(rows).assign(hardware="runs-hw", status="done", exp="e1", backbone="b", method="m",
                                     variant="intask", **{"cfg.method": "scratch"})
    bench = pd.DataFrame([dict(variant=v, arch=a, mode="train", step_ms=ms, step_ms_iqr=iqr, images_per_s=64e3 / ms,
                               saved_for_backward_mb=kept)
                          for v, a, ms, kept in (("v1", "quadranet_v1_test", v1_ms, v1_kept),
                                                 ("hornet", "hornet_test", peer_ms, peer_kept))])
    return runs, bench.assign(hardware="bench-hw", source="test_convnext", model="test_convnext")


@pytest.mark.parametrize("kwargs, verdict", [
    (dict(v1_acc=[80.0, 81.0, 82.0], peer_acc=[80.2, 81.1, 82.3]), HOLDS),  # faster, leaner, within 1 pp
    (dict(v1_acc=[80.0, 81.0, 82.0], peer_acc=[80.2, 81.1, 82.3], v1_ms=14.0), FAILS),  # slower train step
    (dict(v1_acc=[80.0, 81.0, 82.0], peer_acc=[80.2, 81.1, 82.3], v1_kept=9.0), FAILS),  # keeps more for backward
    (dict(v1_acc=[76.0, 77.0, 78.0], peer_acc=[80.2, 81.1, 82.3]), FAILS),  # 4 pp below in every seed
    (dict(v1_acc=[80.0, 81.0, 82.0], peer_acc=[80.2, 81.1, 82.3], v1_ms=11.9, iqr=1.0), INCONCLUSIVE),  # in noise
    (dict(v1_acc=[80.0], peer_acc=[80.2]), FEW_SEEDS),
])
def test_claim_c8_compares_v1_with_each_peer_on_accuracy_speed_and_memory(kwargs, verdict):
    runs, bench = _c8_inputs(**kwargs)
    f = c8(runs, pd.DataFrame(), bench)
    assert f.verdict == verdict
    assert "V1 test vs hornet_test" in f.details and "(paper: up to 1.5x)" in f.details


def test_claim_c8_is_untestable_without_peers_in_the_bench():
    runs, bench = _c8_inputs([80.0, 81.0], [80.0, 81.0])
    assert c8(runs, pd.DataFrame(), bench[bench["variant"] == "v1"]).verdict == UNTESTABLE
