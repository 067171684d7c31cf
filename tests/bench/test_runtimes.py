"""`quadranet bench --runtime`: inference rows of the exported first-order, adapted and merged-LoRA models in
ONNX Runtime (and OpenVINO where it is installed) beside eager, with the runtime column, in one CSV."""
import importlib.util

import pandas as pd
import pytest

from quadranet.cli import main
from quadranet.bench.runtimes import RUNTIME_VARIANTS, target

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")
RUNTIMES = ["onnxruntime"] + (["openvino"] if importlib.util.find_spec("openvino") else [])


@pytest.mark.slow
def test_runtime_rows_beside_eager(tmp_path):
    out = tmp_path / "bench.csv"
    assert main(["bench", "--model", "test_convnext", "--num-classes", "10", "--runtime", *RUNTIMES, "--batch", "2",
                 "--input-size", "32", "--steps", "2", "--warmup", "1", "--device", "cpu", "--out", str(out)]) == 0
    df = pd.read_csv(out)
    assert set(zip(df.runtime, df.variant)) == {(r, v) for r in ["eager", *RUNTIMES] for v in RUNTIME_VARIANTS}
    assert (df["mode"] == "infer").all() and (df.images_per_s > 0).all()
    first = df[df.variant == "first_order"]
    assert (first.ratio_vs_first_order == 1).all()
    eager = df[df.runtime == "eager"]
    assert (eager.speedup_vs_eager == 1).all() and eager.channels_last.all()
    assert not df[df.runtime != "eager"].channels_last.any()
    merged = df[df.variant == "lora_merged"]
    assert (merged.flops_ratio == 1).all()  # merged LoRA costs nothing at inference
    assert (df[df.variant == "adapted"].flops_ratio > 1).all()


def test_target_is_the_eager_one():
    assert target(1.0) == 1.20 and target(1.392) == pytest.approx(1.6008)


def test_unknown_runtime_is_named():
    from quadranet.bench.runtimes import benchmark_runtimes

    with pytest.raises(ValueError, match="runtime \\['tensorrt'\\] not known"):
        benchmark_runtimes("test_convnext", ["tensorrt"])
