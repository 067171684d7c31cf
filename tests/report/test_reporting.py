"""The reporting package on synthetic results folders (tests/report/conftest.py) with known numbers."""
import math
import shutil
from pathlib import Path

import pandas as pd
import pytest

from quadranet import cli
from quadranet.report import FIGURES, TABLES
from quadranet.report.claims import evaluate_claims, write_claims
from quadranet.report.collect import collect, load_collected, write_collected
from quadranet.report.savings import savings, time_to_target
from quadranet.report.tables import to_latex, to_markdown, write_tables

PAPER = str(Path(__file__).parents[2] / "workflow" / "paper_numbers.yaml")


@pytest.fixture
def collected(results):
    return collect(results / "manifest.tsv", sorted((results / "bench").glob("*.csv")))


def test_collect_labels_roles_and_reads_logs(collected):
    runs, curves, bench = collected
    assert set(runs["status"]) == {"done"}
    assert set(runs["exp"]) == {"pretrain", "e1", "e2", "e3", "e4"}
    # the manifest's method label wins over the engine's method (fo_scratch trains with method scratch)
    fo = runs[runs["method"] == "fo_scratch"]
    assert len(fo) == 2 and set(fo["cfg.method"]) == {"scratch"}
    assert runs["hardware"].iloc[0] == "this machine (Test CPU, 2 cores)"
    adapt = runs[(runs["exp"] == "e1") & (runs["method"] == "adapt")]
    assert set(adapt["pretrained_run"]) == {"pretrain/convnext_atto/first_order/src100/seed0"}
    assert adapt["cost_s"].tolist() == [4.0, 4.0]  # train + eval, start-up apart
    assert set(curves["event"]) == {"eval", "step"} and len(bench) == 4


def test_collect_marks_missing_runs(tmp_path, synthetic):
    synthetic.make_results(tmp_path / "r", missing=("e1/convnext_atto/lora/base/seed1",))
    runs, _, _ = collect(tmp_path / "r" / "manifest.tsv")
    missing = runs[runs["status"] == "missing"]
    assert missing["run"].tolist() == ["e1/convnext_atto/lora/base/seed1"]


def test_collect_adds_reference_hardware(tmp_path, results):
    ref = tmp_path / "reference" / "nvidia-h100"
    shutil.copytree(results, ref)
    runs, curves, bench = collect(results / "manifest.tsv", sorted((results / "bench").glob("*.csv")),
                                  tmp_path / "reference")
    assert set(runs["hardware"]) == {"this machine (Test CPU, 2 cores)", "nvidia-h100"}
    assert set(curves["hardware"]) == set(runs["hardware"]) and set(bench["hardware"]) == set(runs["hardware"])


def test_time_to_target_is_first_eval_at_or_above():
    ev = pd.DataFrame({"device_s": [0.0, 10.0, 20.0], "acc1": [10.0, 60.0, 80.0]})
    assert time_to_target(ev, 60.0) == 10.0
    assert math.isnan(time_to_target(ev, 81.0))


def test_savings_known_value(collected, synthetic):
    runs, curves, _ = collected
    sv = savings(runs, curves)
    row = sv[sv["exp"] == "e1"].iloc[0]
    # target: the lowest best accuracy of all adapt/scratch seeds = scratch seed 0's 85.0
    assert row["target_acc1"] == 85.0
    assert row["t_adapt_s"] == 4.0 and row["t_scratch_s"] == 40.0
    assert row["savings"] == pytest.approx(0.9)
    assert row["pretrain_s"] == synthetic.PRETRAIN_S
    assert row["savings_incl_pretraining"] == pytest.approx(1 - (4.0 + synthetic.PRETRAIN_S) / 40.0)
    assert "every adapt and scratch run" in row["target_rule"]


def test_tables_written_in_three_formats(collected, tmp_path):
    names = write_tables(*collected, tmp_path)
    assert names == list(TABLES)
    for name in TABLES:
        for ext in ("csv", "md", "tex"):
            assert (tmp_path / f"{name}.{ext}").stat().st_size > 0
    t1 = (tmp_path / "table1_adaptation.md").read_text()
    assert "90.0% @ 85.00%" in t1 and "85.25 ± 0.25" in t1  # adapt savings; scratch top-1 over seeds 0, 1
    assert "not run" in (tmp_path / "table3_coco.md").read_text()
    t4 = pd.read_csv(tmp_path / "table4_ablations.csv")
    assert set(t4["variant"]) == {"base", "rank1", "two_stage"}


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
    assert claims.loc["C1", "verdict"] == "holds"  # 90% savings reach the paper's low end
    assert claims.loc["C2", "verdict"] == "holds"  # adapt 88 vs scratch 85
    assert claims.loc["C4", "verdict"] == "not testable at this scale"
    assert claims.loc["C5", "verdict"] == "holds"  # +6 pp on gamma, 0 on contrast
    assert claims.loc["C6", "verdict"] == "holds"
    assert claims.loc["C7", "verdict"] == "holds"  # memeff keeps 11 MB vs 14
    assert "98.4%" in claims.loc["C1", "paper"] and "(not public)" in claims.loc["C2", "paper"]
    write_claims(claims.reset_index(), tmp_path / "claims.md")
    text = (tmp_path / "claims.md").read_text()
    assert all(f"## C{i}:" in text for i in range(1, 9)) and (tmp_path / "claims.csv").is_file()


def test_claim_c6_fails_when_initial_accuracy_differs(tmp_path, synthetic):
    root = tmp_path / "r"
    synthetic.make_results(root)
    shutil.rmtree(root / "runs/e1/convnext_atto/finetune/base/seed0")
    synthetic.write_run(root, "e1/convnext_atto/finetune/base/seed0", "finetune", initial=19.0)
    claims = evaluate_claims(*collect(root / "manifest.tsv"), PAPER, "test").set_index("claim")
    assert claims.loc["C6", "verdict"] == "does not hold"


def test_cli_commands(results, tmp_path, capsys):
    out = tmp_path / "collected"
    bench = [str(p) for p in sorted((results / "bench").glob("*.csv"))]
    assert cli.main(["collect", "--manifest", str(results / "manifest.tsv"), "--bench", *bench,
                     "--reference", str(tmp_path / "none"), "--out-dir", str(out)]) == 0
    runs, curves, bench_df = load_collected(out)
    assert len(runs) and len(curves) and len(bench_df)
    assert cli.main(["tables", "--collected", str(out), "--out-dir", str(tmp_path / "tables")]) == 0
    assert cli.main(["claims", "--collected", str(out), "--paper", PAPER, "--scale", "test",
                     "--out", str(tmp_path / "claims.md")]) == 0
    assert "C1: holds" in capsys.readouterr().out


def test_write_collected_roundtrip_with_empty_bench(collected, tmp_path):
    runs, curves, _ = collected
    write_collected(tmp_path, runs, curves, pd.DataFrame())
    r, c, b = load_collected(tmp_path)
    assert len(r) == len(runs) and len(c) == len(curves) and b.empty


def test_claim_c3_on_imagenet21k_pretraining_compares_the_largest_source_with_scratch():
    from quadranet.report.claims import FAILS, HOLDS, UNTESTABLE, c3

    def runs(dataset, adapt_largest):
        rows = [dict(exp="pretrain", method="first_order", variant=f"src{n}", acc1=50.0, **{"cfg.data.dataset": dataset})
                for n in (50, 1000)]
        rows += [dict(exp="e2", method="adapt", variant="src50", acc1=70.0),
                 dict(exp="e2", method="adapt", variant="src1000", acc1=adapt_largest),
                 dict(exp="e2", method="scratch", variant="none", acc1=80.0)]
        return pd.DataFrame(rows).assign(hardware="hw", status="done", backbone="convnext_tiny")

    empty = pd.DataFrame()
    ours, verdict, _ = c3(runs("imagenet21k", 79.5), empty, empty)
    assert verdict == HOLDS and "1000 images/class: 79.50%" in ours and "50 images/class: 70.00%" in ours
    assert c3(runs("imagenet21k", 78.0), empty, empty)[1] == FAILS  # 2 pp below scratch; 70% at src50 is ignored
    assert c3(runs("fashion_mnist", 79.5), empty, empty)[1] == UNTESTABLE


def test_coco_table_and_claim_c4_use_ap_points():
    from quadranet.report.claims import FAILS, HOLDS, c4
    from quadranet.report.tables import table3_coco

    def runs(adapt_ap):
        rows = [dict(method=m, seed=s, box_ap=ap, mask_ap=ap - 0.01, cost_s=100.0)
                for m, ap in (("adapt", adapt_ap), ("scratch", 0.30)) for s in (0, 1)]
        return pd.DataFrame(rows).assign(hardware="hw", status="done", exp="coco", backbone="efficientnet_lite0",
                                         variant="base")

    _, shown, _ = table3_coco(runs(0.45), pd.DataFrame(), pd.DataFrame())
    assert list(shown[shown["method"] == "adapt"]["box AP"]) == ["45.00 ± 0.00"]
    empty = pd.DataFrame()
    ours, verdict, _ = c4(runs(0.295), empty, empty)
    assert verdict == HOLDS and "-0.50" in ours  # half an AP point below scratch: competitive
    assert c4(runs(0.28), empty, empty)[1] == FAILS  # two AP points below


def test_claim_c2_is_inconclusive_when_adaptation_falls_behind_within_the_seed_spread():
    from quadranet.report.claims import FAILS, HOLDS, INCONCLUSIVE, c2

    def runs(adapt, scratch):  # top-1 per seed of the two methods, one backbone
        rows = [dict(method=m, seed=s, acc1=a) for m, accs in (("adapt", adapt), ("scratch", scratch))
                for s, a in enumerate(accs)]
        return pd.DataFrame(rows).assign(hardware="hw", status="done", exp="e1", backbone="efficientnet_lite2")

    empty = pd.DataFrame()
    assert c2(runs([80.0, 81.0], [80.5, 81.5]), empty, empty)[1] == HOLDS  # 0.5 pp below: competitive
    assert c2(runs([77.0, 78.0], [80.5, 81.5]), empty, empty)[1] == FAILS  # 3.5 pp below, spreads of 0.5
    ours, verdict, rule = c2(runs([24.0, 32.0], [28.0, 34.0]), empty, empty)  # 3 pp below, spreads of 4 and 3
    assert verdict == INCONCLUSIVE and "within the seed spread" in ours and "inconclusive" in rule
