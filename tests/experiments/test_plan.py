"""`quadranet plan`: the workflow's runs, their images, and device-hours from a bench, checked against reality."""
from pathlib import Path

import pandas as pd
import pytest

from quadranet.bench.results import read_bench
from quadranet.classify.config import load_config
from quadranet.cli import main
from quadranet.experiments import plan

REPO = Path(__file__).parents[2]
CONFIGS = REPO / "workflow" / "config"
SHEET = REPO / "workflow" / "backbones.tsv"
REFERENCE = REPO / "results" / "reference" / "cpu-2core-amd-epyc-default"


def planned(name: str) -> tuple:
    """(runs, manifest, sheet) of shipped workflow config `name`."""
    _, sheet, registry = plan.load_registry(CONFIGS / f"{name}.yaml", SHEET)
    return registry.runs, registry.manifest, sheet


def test_default_projection_is_within_25_percent_of_the_reference_runs():
    """The default config projected from the bench its reference run measured (E5, same machine) against the
    device-seconds (train + eval) of its committed reference runs."""
    runs, manifest, sheet = planned("default")
    df = plan.project(runs, manifest, read_bench([REFERENCE / "bench" / "test_convnext.csv"]), sheet)
    cmp = plan.compare_reference(df, REFERENCE)
    assert len(cmp) == len(df) == len(runs)  # every run of the default is a reference run
    assert (cmp["images_planned"] == cmp["images_seen"]).all()  # images x epochs counted exactly
    error = cmp["projected_s"].sum() / cmp["measured_s"].sum() - 1
    assert abs(error) < 0.25, error


def fake_bench(models, size=224, rate=1000.0):
    return pd.DataFrame([dict(model=m, variant=v, mode=mode, input_size=size, images_per_s=rate, device="test")
                         for m in models for v in ("first_order", "adapted", "adapted_frozen", "adapted_memeff",
                                                   "v1", "lora", "adapted_rbf", "adapted_rbf_in")
                         for mode in ("train", "infer")])


def test_paper_config_is_planned_per_experiment_before_its_data_exists(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(REPO)  # the config's sheet, workflow/backbones.tsv, is relative to the working directory
    models = ["convnext_tiny", "convnext_small", "convnext_base", "efficientnet_lite0", "efficientnet_lite1",
              "efficientnet_lite2", "tf_efficientnet_lite0", "tf_efficientnet_lite1", "tf_efficientnet_lite2"]
    bench = tmp_path / "gpu.csv"
    fake_bench(models).to_csv(bench, index=False)
    out = tmp_path / "plan.csv"
    assert main(["plan", "--configfile", "workflow/config/paper.yaml", "--bench", str(bench),
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "detection runs (not projected)" in printed and "total" in printed
    summary = pd.read_csv(tmp_path / "plan_summary.csv")
    assert {"pretrain", "e1", "e2", "e3", "e4", "total"} <= set(summary["exp"])
    per_run = pd.read_csv(out)
    assert summary.set_index("exp").loc["total", "device_hours"] == pytest.approx(per_run["device_hours"].sum())
    # ImageNet-1K: a from-scratch run sees 300 epochs of the training set (less the last incomplete batch)
    scratch = per_run[per_run["run"] == "e1/convnext_tiny/scratch/in1k/seed0"].iloc[0]
    assert scratch["train_images"] == 1_281_167 // 4096 * 4096 * 300
    assert scratch["train_s"] == pytest.approx(scratch["train_images"] / 1000.0 * (224 / 224) ** 2)
    # the fake bench measured no energy: none projected, and the plan says so
    assert per_run["energy_kwh"].isna().all() and "energy: none" in printed


def test_energy_is_projected_from_joules_per_image_or_a_given_power(tmp_path, capsys):
    bench = fake_bench(["test_convnext"], size=32, rate=100.0).assign(
        joules_per_image=0.5, energy_source="estimated: CodeCarbon 3.3.2 offline tracker (...)")
    runs, manifest, sheet = planned("smoke")
    df = plan.project(runs, manifest, bench, sheet, carbon_intensity=400.0)
    images = df["train_images"] + df["eval_images"]  # every part of every smoke run is at the bench's 32 px
    assert df["energy_kwh"].to_numpy() == pytest.approx((images * 0.5 / 3.6e6).to_numpy())
    assert df["co2e_kg"].to_numpy() == pytest.approx((df["energy_kwh"] * 0.4).to_numpy())
    assert plan.energy_how(bench, None) == ("projected: images x the bench's joules per image "
                                            "(estimated: CodeCarbon 3.3.2 offline tracker)")
    rated = plan.project(runs, manifest, bench, sheet, power_w=700.0)
    assert rated["energy_kwh"].to_numpy() == pytest.approx((rated["device_hours"] * 0.7).to_numpy())
    assert rated["co2e_kg"].to_numpy() == pytest.approx((rated["energy_kwh"] * 0.475).to_numpy())  # default 475 g/kWh
    assert "700 W (--power-w)" in plan.energy_how(bench, 700.0)
    assert main(["plan", "--configfile", str(CONFIGS / "smoke.yaml"), "--power-w", "-3"]) == 2
    assert "--power-w=-3.0: expected a positive number" in capsys.readouterr().err


def test_a_missing_bench_row_names_the_models_to_measure(tmp_path):
    runs, manifest, sheet = planned("smoke")
    with pytest.raises(ValueError, match=r"models \['test_convnext'\]"):
        plan.project(runs, manifest, fake_bench(["convnext_atto"], size=32), sheet)


def test_kernels_and_evaluations_at_chosen_steps_are_projected():
    """An rbf adapter costs its bilinear variant's time x the bench's adapted_rbf / adapted; evaluations at
    `train.eval_steps` are counted beside those every `eval_every` epochs."""
    runs, manifest, sheet = planned("default")
    bench = fake_bench(["test_convnext"], size=32)
    bench.loc[bench["variant"] == "adapted_rbf", "images_per_s"] = 500.0  # half the bilinear adapter's rate
    df = plan.project(runs, manifest, bench, sheet).set_index("run")
    base, rbf = df.loc["e1/test_convnext/adapt/transfer/seed0"], df.loc["e4/test_convnext/adapt/rbf/seed0"]
    assert rbf["train_images"] == base["train_images"]
    assert rbf["train_s"] == pytest.approx(2 * base["train_s"])
    cfg = runs["e1/test_convnext/adapt/transfer/seed0"]
    per_eval = plan._images(load_config(base=cfg).data)[1]

    def evaluated(eval_steps):
        work = plan.run_work({**cfg, "train": {**cfg.get("train", {}), "eval_steps": eval_steps}})
        return sum(n for _, _, n, kind in work.parts if kind == "eval")

    # steps 1 and 2 fall inside the first epoch; step 10,000 after the run's last
    assert evaluated([1, 2, 10_000]) - evaluated([]) == 2 * per_eval


def test_runs_from_the_packaged_imagenet_weights_are_projected_on_the_network_those_weights_need():
    """cpu_long's EfficientNet-Lite0 runs from ImageNet weights train tf_efficientnet_lite0 (TF "same" padding), its
    quadratic network from scratch timm's efficientnet_lite0: each is projected on its own bench rows."""
    runs, manifest, sheet = planned("cpu_long")
    lite0 = {rid: cfg for rid, cfg in runs.items() if rid.startswith("e1/efficientnet_lite0/")}
    archs = {rid.split("/")[2]: plan.run_work(cfg).arch for rid, cfg in lite0.items()}
    assert archs == {"scratch": "efficientnet_lite0", "adapt": "tf_efficientnet_lite0",
                     "finetune": "tf_efficientnet_lite0", "lora": "tf_efficientnet_lite0",
                     "head": "tf_efficientnet_lite0"}
    with pytest.raises(ValueError, match=r"models \['tf_efficientnet_lite0'\]"):
        plan.project(lite0, manifest, fake_bench(["efficientnet_lite0"], size=64), sheet)


def test_the_configs_sheet_is_found_from_the_working_directory_or_given(tmp_path, monkeypatch, capsys):
    """As snakemake reads a config, its relative paths are relative to the working directory; --sheet names another
    sheet file."""
    monkeypatch.chdir(tmp_path)
    args = ["plan", "--configfile", str(CONFIGS / "smoke.yaml"), "--power-w", "100", "--out", "plan.csv",
            "--bench", str(REFERENCE / "bench" / "test_convnext.csv")]
    assert main(args) == 2
    assert "backbone sheet 'workflow/backbones.tsv' does not exist" in capsys.readouterr().err
    assert main([*args, "--sheet", str(SHEET)]) == 0
    assert len(pd.read_csv(tmp_path / "plan.csv")) == len(planned("smoke")[0])


@pytest.mark.parametrize("size, batch", [(32, 32), (64, 32), (128, 8), (224, 2), (512, 1)])
def test_the_probe_batch_has_at_most_the_pixels_of_the_asked_batch_at_64_px(size, batch):
    assert plan.probe_batch(32, size) == batch


def test_a_probe_that_cannot_fit_is_refused_before_it_runs_naming_the_memory_it_needs():
    params = plan.parameter_count("test_convnext")
    needed = plan.probe_memory(params)
    assert needed == params * 36  # two networks' weights, gradients and AdamW moments, and the base's weights
    plan.check_probe_memory({("test_convnext", 224, None)}, free=needed)  # fits
    with pytest.raises(ValueError, match=rf"probing test_convnext at 224 px needs at least {needed / 2**30:.1f} GiB"):
        plan.check_probe_memory({("test_convnext", 224, "test")}, free=needed)  # its V1 network is larger


@pytest.mark.slow
def test_the_probe_measures_each_variant_beside_the_first_order_network_once(capsys):
    bench = plan.probe({("test_convnext", 128, "test")}, device="cpu", batch=8, steps=1, warmup=0, kernels={"rbf"})
    assert "batch 2" in capsys.readouterr().out  # 8 images' pixels at 64 px
    assert sorted(bench["variant"] + "/" + bench["mode"]) == sorted(
        f"{v}/{mode}" for v in (*plan.PROBED, "adapted_rbf") for mode in ("train", "infer"))
    assert (bench["batch"] == 2).all() and (bench["input_size"] == 128).all()
