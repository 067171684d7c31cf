"""quadranet bench: rows for every variant, ratios against the first-order model, memory columns, CSV."""
import json
import math
import time

import numpy as np
import pandas as pd
import pytest
import torch

from quadranet.bench import speed
from quadranet.layers import fused
from quadranet.cli import main

TINY = dict(batch=2, input_size=32, steps=2, warmup=1)


def _cli(argv):
    assert main(argv) == 0


@pytest.fixture(scope="module")
def model_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "bench.csv"
    _cli(["bench", "--model", "convnext_atto", "--num-classes", "10", "--variants", *speed.VARIANTS,
          "--batch", "2", "--input-size", "32", "--steps", "2", "--warmup", "1", "--device", "cpu", "--out", str(out)])
    return out, pd.read_csv(out)


def test_rows_for_each_variant_and_mode(model_run):
    _, df = model_run
    assert list(df.columns[:len(speed.COLUMNS)]) == list(speed.COLUMNS)
    assert sorted(zip(df.variant, df["mode"])) == sorted((v, m) for v in speed.VARIANTS for m in speed.MODES)
    assert (df.images_per_s > 0).all() and (df.step_ms > 0).all() and (df.batch == 2).all()
    assert (df.device == "cpu").all() and (df.dtype == "float32").all() and df.peak_mem_mb.isna().all()


def test_ratios_against_first_order(model_run):
    _, df = model_run
    assert (df[df.variant == "first_order"].ratio_vs_first_order == 1.0).all()
    for _, g in df.groupby("mode"):
        base = g[g.variant == "first_order"].step_ms.item()
        assert g.ratio_vs_first_order.tolist() == pytest.approx((g.step_ms / base).tolist())


def test_flops_ratio_counts_the_added_terms(model_run):
    _, df = model_run
    train = df[df["mode"] == "train"].set_index("variant")
    assert (df[df.variant == "first_order"].flops_ratio == 1.0).all() and (df.flops > 0).all()
    quad = train.flops_ratio[["adapted", "adapted_frozen", "adapted_memeff"]]
    assert quad.nunique() == 1 and quad.iloc[0] > 1
    assert train.flops_ratio["lora"] > 1
    assert (df.groupby("variant").flops.nunique() == 1).all()  # per image, the same in both modes


def test_cpu_variants_take_turns():
    calls = []
    timed = speed.time_steps({"a": lambda x: calls.append("a"), "b": lambda x: calls.append("b")},
                             lambda: (None,), steps=3, warmup=1, device=torch.device("cpu"))
    assert calls == ["a", "b"] * 4
    assert {k: len(t) for k, (t, _, _) in timed.items()} == {"a": 3, "b": 3}
    assert all(math.isnan(j) for _, _, j in timed.values())  # no meter, no energy


class FakeMeter:
    """An energy counter at a constant `watts`, on the clock the bench times with."""

    def __init__(self, watts):
        self.watts, self.t0 = watts, time.perf_counter()

    def update(self):
        return self.watts * (time.perf_counter() - self.t0)


def test_cpu_energy_is_mean_power_times_step_time():
    timed = speed.time_steps({"fast": lambda x: time.sleep(0.01), "slow": lambda x: time.sleep(0.03)},
                             lambda: (None,), steps=4, warmup=1, device=torch.device("cpu"), meter=FakeMeter(50.0))
    for key, (t, _, joules) in timed.items():
        assert joules == pytest.approx(50.0 * np.median(t), rel=0.05), key  # the meter's 50 W x the step time
    assert timed["slow"][2] > 2 * timed["fast"][2]


def test_trainable_params_and_saved_memory(model_run):
    _, df = model_run
    train = df[df["mode"] == "train"].set_index("variant")
    assert train.trainable_params["adapted_frozen"] < train.trainable_params["adapted"] == train.params["adapted"]
    assert train.trainable_params["lora_frozen"] < train.trainable_params["lora"]
    assert train.params["adapted"] > train.params["first_order"]
    assert (train.saved_for_backward_mb > 0).all()
    # on the CPU both go through the fused kernel, which keeps only the input (test_layer_mode_... below)
    assert train.saved_for_backward_mb["adapted_memeff"] <= train.saved_for_backward_mb["adapted"]
    assert train.saved_for_backward_mb["adapted_memeff"] < train.saved_for_backward_mb["adapted_autograd"]
    assert (df[df["mode"] == "infer"].saved_for_backward_mb == 0).all()
    # energy on the CPU: CodeCarbon's estimate (or RAPL), labelled; or unavailable, with the reason
    for source, joules in zip(df.energy_source, df.joules_per_image):
        assert source.startswith(("estimated: CodeCarbon", "measured: CodeCarbon", "unavailable:")), source
        assert joules > 0 or source.startswith("unavailable")
    assert train["rank"]["adapted"] == 4 and train["rank"]["lora"] >= 1  # lora: matched parameter budget


def test_csv_and_provenance_written(model_run):
    out, df = model_run
    assert len(df) == 2 * len(speed.VARIANTS)
    prov = json.loads(out.with_suffix(".json").read_text())
    assert prov["command"].startswith("quadranet") and prov["versions"]["torch"] == torch.__version__
    assert "git_commit" in prov and "date" in prov and prov["config"]["model"] == "convnext_atto"


def _layer_run(out) -> pd.DataFrame:
    _cli(["bench", "--layer", "--channels", "8", "--batch", "2", "--input-size", "16", "--steps", "2",
          "--warmup", "1", "--device", "cpu", "--out", str(out)])
    df = pd.read_csv(out)
    assert df.ratio_vs_first_order[df.variant == "first_order"].eq(1.0).all() and (df.model == "dwconv7x7_c8").all()
    return df[df["mode"] == "train"].set_index("variant").saved_for_backward_mb


def test_layer_mode_memory_efficient_saves_less(tmp_path, monkeypatch):
    """The memory-efficient product keeps less than autograd's standard backward (`adapted_autograd`), and so
    does the fused CPU kernel, with or without the flag; where the kernel is not built, the flag decides."""
    fused_saved = _layer_run(tmp_path / "fused.csv")
    assert sorted(fused_saved.index) == sorted(speed.LAYER_VARIANTS)
    assert fused_saved["adapted"] == fused_saved["adapted_memeff"] < fused_saved["adapted_autograd"]
    monkeypatch.setattr(fused, "_BUILT", {"ops": None})  # as where the kernel cannot be built
    saved = _layer_run(tmp_path / "grouped.csv")
    assert saved["adapted_memeff"] < saved["adapted"]
    assert fused_saved["adapted"] == fused_saved["adapted_memeff"] <= saved["adapted_memeff"]


@pytest.mark.parametrize("kwargs,match", [
    (dict(variants=["quadratic"]), "quadratic"),
    (dict(steps=0), "steps=0"),
    (dict(warmup=-1), "warmup=-1"),
    (dict(model="resnet18", variants=["v1"]), r"v1 variant of 'resnet18' needs a size \(--v1-size\)"),
    (dict(model="resnet18", variants=["hornet"], v1_size="nano"), "registered hornet_<size>; got 'nano'"),
    (dict(dtype="float16"), "float16"),
    (dict(compile=True, warmup=0), "warmup=0"),
])
def test_bad_options_are_value_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        speed.benchmark(**{**TINY, "device": "cpu", **kwargs})


@pytest.mark.gpu
def test_gpu_bf16_channels_last_peak_memory():
    df = speed.benchmark("convnext_atto", ["adapted", "adapted_memeff"], batch=32, input_size=128, steps=3, warmup=2)
    assert (df.dtype == "bfloat16").all() and df.channels_last.all() and (df.peak_mem_mb > 0).all()
    train = df[df["mode"] == "train"].set_index("variant")
    assert train.peak_mem_mb["adapted_memeff"] < train.peak_mem_mb["adapted"]
    infer = df[df["mode"] == "infer"].set_index("variant")
    assert (infer.peak_mem_mb < train.peak_mem_mb).all()


@pytest.mark.gpu
def test_gpu_layer_mode_compiled():
    df = speed.benchmark_layer(channels=96, batch=16, input_size=56, steps=3, warmup=2, compile=True)
    assert df.compile.all() and (df.step_ms > 0).all()
    train = df[df["mode"] == "train"].set_index("variant")
    assert train.saved_for_backward_mb["adapted_memeff"] < train.saved_for_backward_mb["adapted"]


def test_kernel_variants_by_name():
    """The adapter's rbf kernels are bench variants asked for by name; the default list leaves them out."""
    assert not set(speed.KERNEL_VARIANTS) & set(speed.VARIANTS)
    df = speed.benchmark(model="test_convnext", variants=["adapted", *speed.KERNEL_VARIANTS], modes=["train"],
                         num_classes=10, device="cpu", **TINY)
    rows = df.set_index("variant")
    assert list(rows.index) == ["first_order", "adapted", "adapted_rbf", "adapted_rbf_in"]
    assert (rows.loc[list(speed.KERNEL_VARIANTS), "flops_ratio"] > 1).all()
    # rbf: one projection weight and two BatchNorm parameters per channel instead of rank projection weights;
    # rbf_in adds the dense 1x1 projections P_a, P_b
    assert rows.loc["adapted_rbf", "params"] < rows.loc["adapted", "params"] < rows.loc["adapted_rbf_in", "params"]


def test_peers_are_measured_at_the_v1_size_and_name_their_network():
    df = speed.benchmark(**{**TINY, "device": "cpu", "model": "test_convnext", "variants": ["v1", "hornet", "gfnet",
                                                                                          "focalnet"],
                            "v1_size": "test", "modes": ["infer"]})
    assert dict(zip(df["variant"], df["arch"])) == {"first_order": "test_convnext", "v1": "quadranet_v1_test",
                                                    "hornet": "hornet_test", "gfnet": "gfnet_test",
                                                    "focalnet": "focalnet_test"}
    assert (df["images_per_s"] > 0).all()
