"""Inference speed of exported models in deployment runtimes beside eager PyTorch (`quadranet bench --runtime`).

The first-order model, its quadratized version (`adapted`) and its LoRA version merged into its layers
(`lora_merged`, at the matched parameter budget: it computes exactly a first-order model of the same shape) are
exported with `quadranet.deploy.export` (BatchNorm folded, custom ops decomposed) and timed in each runtime named,
ONNX Runtime (CPU execution provider, or CUDA on a GPU) and OpenVINO (CPU), together with the same networks in eager
PyTorch, all in one process taking turns step by step (`speed.time_steps`), on the same inputs: eager in the
bench's layout (channels-last by default), the runtimes on NCHW float32 arrays (their input layout). The added
terms get small random weights (as after training) so that no runtime can fold them away. Rows carry `runtime`
(`eager`, `onnxruntime`, `openvino`), `ratio_vs_first_order` within the runtime and `speedup_vs_eager` (eager step
time of the same variant / the runtime's).
"""
from __future__ import annotations

import copy
import tempfile
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
from torch import nn

from ..convert import lora_adapters, merge_lora, model_flops, quadratic_adapters
from .speed import COLUMNS, build_variant, check_positive, cudnn_autotuning, measurement_setup, time_steps

RUNTIMES = ("eager", "onnxruntime", "openvino")
RUNTIME_VARIANTS = ("first_order", "adapted", "lora_merged")


def openvino_model(path, threads: int):
    """An OpenVINO CPU model compiled from ONNX file `path` (float32, `threads` inference threads)."""
    import openvino as ov

    return ov.Core().compile_model(str(path), "CPU", {"INFERENCE_NUM_THREADS": threads,
                                                      "INFERENCE_PRECISION_HINT": "f32",
                                                      "PERFORMANCE_HINT": "LATENCY"})


def _runtime_step(runtime: str, path: Path, device: torch.device, threads: int):
    """A step function (x_eager, x_array) -> None running ONNX file `path` in `runtime`."""
    from ..deploy import onnx_session

    if runtime == "onnxruntime":
        session = onnx_session(path, device.type, threads)
        name = session.get_inputs()[0].name
        return lambda x, a: session.run(None, {name: a})
    if runtime == "openvino":
        if device.type != "cpu":
            raise ValueError(f"runtime 'openvino' runs on the CPU here, not on device {device}")
        request = openvino_model(path, threads).create_infer_request()
        return lambda x, a: request.infer({0: a})
    raise ValueError(f"runtime {runtime!r} is not known; expected some of {list(RUNTIMES)}")


def _variants(model: str, variants: Sequence[str], num_classes: int, seed: int, **adapter) -> dict:
    """{variant: (eval-mode network, adapter rank or None)}; added terms at small random weights."""
    import timm

    torch.manual_seed(seed)
    base = timm.create_model(model, num_classes=num_classes)
    nets = {}
    for variant in variants:
        torch.manual_seed(seed)
        net, rank = build_variant(model, "lora" if variant == "lora_merged" else variant, base,
                                  num_classes=num_classes, **adapter)
        with torch.no_grad():
            for _, a in quadratic_adapters(net):
                nn.init.normal_(a.quad_out.weight, std=0.02)
            for _, a in lora_adapters(net):
                nn.init.normal_(a.lora_b.weight, std=0.02)
        if variant == "lora_merged":
            net = merge_lora(net)
        nets[variant] = (net.eval(), rank)
    return nets


def benchmark_runtimes(model: str = "convnext_atto", runtimes: Sequence[str] = ("eager", "onnxruntime"),
                       variants: Sequence[str] = RUNTIME_VARIANTS, batch: int = 8, input_size: int = 64,
                       steps: int = 10, warmup: int = 3, device: str = "cpu", channels_last: Optional[bool] = None,
                       num_classes: int = 1000, rank: int = 4, dilation: int = 2, kernel_size: Optional[int] = 3,
                       targets=None, lora_rank: Optional[int] = None, seed: int = 0, workdir=None):
    """A pandas DataFrame, one row per (runtime, variant), inference only, columns speed.COLUMNS + runtime and
    speedup_vs_eager. `eager` is always measured (first) since the speed-ups need it; `first_order` likewise."""
    import pandas as pd

    from ..deploy import export
    from ..run.accounting import EnergyMeter

    check_positive(batch=batch, input_size=input_size, steps=steps, warmup=warmup)
    bad = [r for r in runtimes if r not in RUNTIMES]
    if bad:
        raise ValueError(f"runtime {bad!r} not known; expected some of {list(RUNTIMES)}")
    bad = [v for v in variants if v not in RUNTIME_VARIANTS]
    if bad:
        raise ValueError(f"variants {bad!r} not known with --runtime; expected some of {list(RUNTIME_VARIANTS)}")
    runtimes = list(dict.fromkeys(["eager", *runtimes]))
    variants = list(dict.fromkeys(["first_order", *variants]))
    dev, _, fmt, meta = measurement_setup(device, "float32", channels_last, False, warmup, input_size)
    nets = _variants(model, variants, num_classes, seed, rank=rank, dilation=dilation, kernel_size=kernel_size,
                     targets=targets, lora_rank=lora_rank)
    threads = torch.get_num_threads()
    steps_by_key = {}
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        for variant, (net, _) in nets.items():
            eager = copy.deepcopy(net).to(dev, memory_format=fmt)
            steps_by_key[("eager", variant)] = lambda x, a, net=eager: net(x)
            if len(runtimes) > 1:
                path = export(net, Path(tmp) / f"{variant}.onnx", "onnx", input_size=(3, input_size, input_size),
                              batch=batch)
                for runtime in runtimes[1:]:
                    steps_by_key[(runtime, variant)] = _runtime_step(runtime, path, dev, threads)

        def make_inputs():
            x = torch.randn(batch, 3, input_size, input_size)
            return x.to(dev).contiguous(memory_format=fmt), x.numpy()

        flops = {v: model_flops(net, (3, input_size, input_size)) for v, (net, _) in nets.items()}
        meter = EnergyMeter(dev)
        try:
            with cudnn_autotuning(dev), torch.no_grad():
                timed = time_steps(steps_by_key, make_inputs, steps, warmup, dev, meter)
        finally:
            meter.close()
    rows = []
    for (runtime, variant), (times, peak, joules) in timed.items():
        q1, med, q3 = np.percentile(times, [25, 50, 75])
        net, r = nets[variant]
        rows.append(dict(model=model, variant=variant, mode="infer", batch=batch, **meta, runtime=runtime,
                         threads=threads, images_per_s=batch / med, step_ms=1e3 * med, step_ms_iqr=1e3 * (q3 - q1),
                         peak_mem_mb=peak, saved_for_backward_mb=0.0, params=sum(p.numel() for p in net.parameters()),
                         trainable_params=0, rank=r, flops=flops[variant], joules_per_image=joules / batch,
                         energy_source=meter.source))
    df = pd.DataFrame(rows)
    df.loc[df.runtime != "eager", "channels_last"] = False  # the runtimes take NCHW arrays
    first = df[df.variant == "first_order"].set_index("runtime").step_ms
    eager = df[df.runtime == "eager"].set_index("variant").step_ms
    df["ratio_vs_first_order"] = df.step_ms / df.runtime.map(first)
    df["flops_ratio"] = df.flops / flops["first_order"]
    df["speedup_vs_eager"] = df.variant.map(eager) / df.step_ms
    return df[[c for c in COLUMNS if c in df] + [c for c in df if c not in COLUMNS]]


def target(flops_ratio: float) -> float:
    """The inference target the eager bench and the runtimes share: adapted / first-order at most
    max(1.20, 1.15 x the FLOP ratio)."""
    return max(1.20, 1.15 * flops_ratio)
