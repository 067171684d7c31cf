"""Train-step and inference speed of a first-order model and its quadratic variants (CLI: `quadranet bench`).

In the manner of timm's `benchmark.py`: every variant of one base model runs in the same process, on
the same device, layout and precision (docs/paper.md, measurement rules), with warm-up steps, then `steps` timed
steps on fresh random inputs, timed with CUDA events on a GPU and `perf_counter` on the CPU, where the
variants take turns step by step (`time_steps`); we report the median step time, its interquartile range
and images/s, the ratio to the first-order model's median step time in the same mode, and `flops_ratio`,
the variant's FLOPs per image over the first-order model's (counted as `conversion_report` counts them,
at the bench input size). Memory: `peak_mem_mb` is `torch.cuda.max_memory_allocated` over
the timed steps (GPU only); `saved_for_backward_mb` is what autograd holds for one train step's
backward (`quadranet.memory.saved_tensor_bytes`, parameters included), measured on any device.
Energy: `joules_per_image` over the timed steps from the training runs' meter (`quadranet.run.EnergyMeter`),
with `energy_source` saying how it was obtained. On a GPU each variant runs alone between two reads of the
board's counter (NVML); on the CPU the variants take turns, so the meter gives the process's mean power over
all of them (CodeCarbon: RAPL, or its load-based estimate) and each row's energy is that power times its step
time: the energy ratios on the CPU are then the time ratios, and say nothing more.

`arch` is the timm architecture each row measured (`model` itself, or the sized variant's own network).
Variants: `first_order` (the timm model), `adapted` (quadratize, all trainable), `adapted_frozen`
(primary terms frozen: the quadratic terms and the unconverted layers, the head included, train),
`adapted_memeff` (memory-efficient quadratic product), `adapted_autograd` (the plain product through autograd's
standard backward, which keeps the factor maps: the reference for memory-efficient backward, since on the CPU
`adapted` runs the fused kernel, memory-efficient by construction), `v1` (QuadraNet V1 `quadranet_v1_<size>`),
`lora` / `lora_frozen` (the linear low-rank baseline at the matched parameter budget). Asked for by name only
(not in the default list): `adapted_rbf` / `adapted_rbf_in`, the adapter with the rbf / rbf_in kernel (all trainable,
as `adapted`; `quadranet.layers.adapter`), and the high-order peers at the size of `v1`, each its own architecture
at random init: `hornet` (`hornet_<size>`, gnConv), `gfnet` (`gfnet_<size>`, global filter), `focalnet`
(`focalnet_<size>`, focal modulation).
`--layer` instead benchmarks one ConvNeXt-like depthwise layer: the bare conv and its quadratic
adapter with the plain, the memory-efficient and the standard-autograd product (forward+backward, and forward
alone).
"""
from __future__ import annotations

import contextlib
import copy
import time
from typing import Callable, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..convert import lora_adapt, matched_lora_rank, model_flops, quadratize
from ..layers import fused
from ..memory import saved_tensor_bytes
from ..run.device import resolve_device

VARIANTS = ("first_order", "adapted", "adapted_frozen", "adapted_memeff", "adapted_autograd", "v1", "lora",
            "lora_frozen")
KERNEL_VARIANTS = {"adapted_rbf": "rbf", "adapted_rbf_in": "rbf_in"}  # variant -> adapter kernel; by name only
# variant -> timm name of a high-order architecture of its own at the base model's size (v1_size); peers by name only
SIZED_VARIANTS = {"v1": "quadranet_v1_{}", "hornet": "hornet_{}", "gfnet": "gfnet_{}", "focalnet": "focalnet_{}"}
PEER_VARIANTS = ("hornet", "gfnet", "focalnet")
LAYER_VARIANTS = ("first_order", "adapted", "adapted_memeff", "adapted_autograd")
MODES = ("train", "infer")
COLUMNS = ("model", "variant", "arch", "mode", "batch", "input_size", "device", "threads", "dtype", "channels_last", "compile",
           "images_per_s", "step_ms", "step_ms_iqr", "peak_mem_mb", "saved_for_backward_mb", "params",
           "trainable_params", "rank", "flops", "flops_ratio", "ratio_vs_first_order", "joules_per_image",
           "energy_source")
SHOWN = ("model", "variant", "mode", "rank", "images_per_s", "step_ms", "step_ms_iqr", "flops_ratio",
         "ratio_vs_first_order", "joules_per_image", "peak_mem_mb", "saved_for_backward_mb", "trainable_params")


def check_positive(**values) -> None:
    for k, v in values.items():
        if isinstance(v, bool) or not isinstance(v, int) or v < (0 if k == "warmup" else 1):
            raise ValueError(f"{k}={v!r} must be an integer >= {0 if k == 'warmup' else 1}")


def _chosen(values: Sequence[str], allowed: Sequence[str], what: str) -> list:
    bad = [v for v in values if v not in allowed]
    if bad or not values:
        raise ValueError(f"{what} {bad or list(values)!r} not known; expected some of {list(allowed)}")
    return list(dict.fromkeys(values))


def _joules(meter) -> float:
    joules = meter.update() if meter is not None else None
    return float("nan") if joules is None else joules


def time_steps(steps_by_key: dict, make_inputs: Callable[[], tuple], steps: int, warmup: int,
               device: torch.device, meter=None) -> dict:
    """{key: (seconds of each of `steps` calls `step(*make_inputs())` after `warmup` untimed ones, peak memory,
    joules per step)}.

    Inputs are made outside the timed region. On the CPU the steps run round-robin over the keys, so that load
    from other processes on a shared machine hits every variant alike (the ratios are what counts); peak memory
    is NaN there, and a key's joules per step are the mean power `meter` (an EnergyMeter) saw over the timed
    rounds times its median step time. On a GPU each key runs on its own, each step between two CUDA events read
    after one final synchronisation; its peak memory is `torch.cuda.max_memory_allocated` and its joules the
    meter's reading over its timed steps. Joules are NaN without a meter or where it measures nothing.
    """
    if device.type != "cuda":
        times = {k: [] for k in steps_by_key}
        for i in range(warmup + steps):
            if i == warmup:
                e0, t_start = _joules(meter), time.perf_counter()
            for key, step in steps_by_key.items():
                args = make_inputs()
                t0 = time.perf_counter()
                step(*args)
                if i >= warmup:
                    times[key].append(time.perf_counter() - t0)
        watts = (_joules(meter) - e0) / (time.perf_counter() - t_start)
        return {k: (np.array(t), float("nan"), watts * float(np.median(t))) for k, t in times.items()}
    out = {}
    for key, step in steps_by_key.items():
        for _ in range(warmup):
            step(*make_inputs())
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        e0 = _joules(meter)
        events = []
        for _ in range(steps):
            args = make_inputs()
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            step(*args)
            end.record()
            events.append((start, end))
        torch.cuda.synchronize(device)
        out[key] = (np.array([s.elapsed_time(e) / 1e3 for s, e in events]),
                    torch.cuda.max_memory_allocated(device) / 2**20, (_joules(meter) - e0) / steps)
    return out


def _step(net: nn.Module, mode: str, loss_fn: Callable, *, device: torch.device, amp_dtype: Optional[torch.dtype],
          compile: bool, optimizer: Optional[str]) -> Callable:
    """The step of one mode: `train` = forward + backward (+ optimizer step unless `optimizer` is None),
    `infer` = forward under no_grad. `loss_fn(output, target)` gives the training loss."""
    fwd = torch.compile(net) if compile else net
    trainable = [p for p in net.parameters() if p.requires_grad]
    opt = None
    if mode == "train" and optimizer is not None:
        opt = (torch.optim.SGD(trainable, lr=1e-4, momentum=0.9) if optimizer == "sgd"
               else torch.optim.AdamW(trainable, lr=1e-4))

    def autocast():
        return torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None)

    def train_step(x, t):
        with autocast():
            loss = loss_fn(fwd(x), t)
        loss.backward()
        if opt is not None:
            opt.step()
        net.zero_grad(set_to_none=True)

    def infer_step(x, t):
        with torch.no_grad(), autocast():
            fwd(x)

    return train_step if mode == "train" else infer_step


def _measure(nets: dict, make_inputs: Callable[[], tuple], loss_fn: Callable, modes: Sequence[str], *,
             device: torch.device, amp_dtype: Optional[torch.dtype], compile: bool, steps: int, warmup: int,
             optimizer: Optional[str]) -> list[dict]:
    """One row per (variant, mode) of the networks `nets` ({variant: net}), timed together (`time_steps`), with
    the energy of the training runs' meter."""
    from ..run.accounting import EnergyMeter

    meter = EnergyMeter(device)  # its start-up (CodeCarbon's hardware probe) runs beside the first warm-up
    try:
        return _measure_modes(nets, make_inputs, loss_fn, modes, device=device, amp_dtype=amp_dtype,
                              compile=compile, steps=steps, warmup=warmup, optimizer=optimizer, meter=meter)
    finally:
        meter.close()


def _measure_modes(nets, make_inputs, loss_fn, modes, *, device, amp_dtype, compile, steps, warmup, optimizer,
                   meter) -> list[dict]:
    rows = []
    for mode in modes:
        x, t = make_inputs()
        saved = {}
        for variant, net in nets.items():
            net.train(mode == "train")
            saved[variant] = 0
            if mode == "train":  # on the eager model: saved-tensor hooks do not see inside compiled graphs
                with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                    saved[variant], loss = saved_tensor_bytes(lambda net=net: loss_fn(net(x), t))
                del loss
                net.zero_grad(set_to_none=True)
        # made per mode, so that infer rows hold no optimizer state
        timed = time_steps({v: _step(net, mode, loss_fn, device=device, amp_dtype=amp_dtype, compile=compile,
                                     optimizer=optimizer) for v, net in nets.items()},
                           make_inputs, steps, warmup, device, meter)
        for variant, net in nets.items():
            times, peak, joules = timed[variant]
            q1, med, q3 = np.percentile(times, [25, 50, 75])
            rows.append(dict(
                variant=variant, mode=mode, batch=x.shape[0], images_per_s=x.shape[0] / med, step_ms=1e3 * med,
                step_ms_iqr=1e3 * (q3 - q1), peak_mem_mb=peak, saved_for_backward_mb=saved[variant] / 2**20,
                params=sum(p.numel() for p in net.parameters()), threads=torch.get_num_threads(),
                trainable_params=sum(p.numel() for p in net.parameters() if p.requires_grad),
                joules_per_image=joules / x.shape[0], energy_source=meter.source,
            ))
    return rows


@contextlib.contextmanager
def cudnn_autotuning(device: torch.device):
    """cudnn autotuning on for the benchmark (on a GPU), restored after; the GPU's cached memory freed after."""
    old = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = device.type == "cuda"
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = old
        if device.type == "cuda":
            torch.cuda.empty_cache()


def measurement_setup(device: str, dtype: str, channels_last: Optional[bool], compile: bool, warmup: int,
                      input_size: int):
    """(device, autocast dtype or None, memory format, the row columns describing the set-up) of a benchmark."""
    if compile and warmup < 1:
        raise ValueError(f"warmup={warmup} with compile: at least one warm-up step must compile the network")
    dev = resolve_device(device)
    if dtype == "auto":
        dtype = "bfloat16" if dev.type == "cuda" else "float32"
    if dtype not in ("float32", "bfloat16"):
        raise ValueError(f"dtype={dtype!r} is not supported; expected auto, float32 or bfloat16")
    amp = torch.bfloat16 if dtype == "bfloat16" else None  # bf16 autocast; weights stay fp32
    if channels_last is None:  # as the training engine runs (`train.channels_last`)
        channels_last = True
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    device_name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"
    meta = dict(input_size=input_size, device=device_name, dtype=dtype, channels_last=channels_last, compile=compile)
    return dev, amp, fmt, meta


def _with_ratios(rows: list[dict]):
    import pandas as pd

    df = pd.DataFrame(rows)
    base = df[df.variant == "first_order"].set_index("mode")
    df["ratio_vs_first_order"] = df.step_ms / df["mode"].map(base.step_ms)
    df["flops_ratio"] = df.flops / df["mode"].map(base.flops)
    return df[[c for c in COLUMNS if c in df] + [c for c in df if c not in COLUMNS]]


def sized_arch(model: str, variant: str, v1_size: Optional[str]) -> str:
    """timm name of sized variant `variant` (SIZED_VARIANTS) of base `model`: its size is `v1_size`, else the part of
    `model` after "convnext_" (convnext_atto -> atto)."""
    import timm

    from .. import models  # noqa: F401  (registers the QuadraNet V1 family and the peers with timm)

    size = v1_size or model.removeprefix("convnext_")
    arch = SIZED_VARIANTS[variant].format(size)
    if not timm.is_model(arch):
        sizes = sorted(n.removeprefix(SIZED_VARIANTS[variant].format("")) for n in timm.list_models(
            SIZED_VARIANTS[variant].format("*")))
        raise ValueError(f"the {variant} variant of {model!r} needs a size (--v1-size) with a registered "
                         f"{SIZED_VARIANTS[variant].format('<size>')}; got {size!r}, expected one of {sizes}")
    return arch


class StandardBackward(nn.Module):
    """`net` with its quadratic terms through the grouped-conv formulation and autograd's standard backward."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, *args):
        with fused.disabled():
            return self.net(*args)


def build_variant(model: str, variant: str, base: Optional[nn.Module] = None, *, num_classes: int = 1000,
                  rank: int = 4, dilation: int = 2, kernel_size: Optional[int] = 3, targets=None,
                  v1_size: Optional[str] = None, lora_rank=None) -> tuple[nn.Module, object]:
    """(the network of `variant` of timm `model`, its adapter rank or None; LoRA: layer name -> rank unless
    `lora_rank` gives one for all). Variants of `base` are copies of it."""
    import timm

    if variant in SIZED_VARIANTS:
        return timm.create_model(sized_arch(model, variant, v1_size), num_classes=num_classes), None
    net = copy.deepcopy(base) if base is not None else timm.create_model(model, num_classes=num_classes)
    if variant == "first_order":
        return net, None
    if variant.startswith("adapted"):
        quadratize(net, rank=rank, dilation=dilation, kernel_size=kernel_size, targets=targets,
                   kernel=KERNEL_VARIANTS.get(variant, "bilinear"), memory_efficient=variant == "adapted_memeff",
                   freeze_primary=variant == "adapted_frozen")
        return (StandardBackward(net) if variant == "adapted_autograd" else net), rank
    if variant in ("lora", "lora_frozen"):
        ranks = lora_rank or matched_lora_rank(net, rank, targets, dilation=dilation, kernel_size=kernel_size).ranks
        lora_adapt(net, rank=ranks, targets=targets, freeze_primary=variant == "lora_frozen")
        return net, ranks
    raise ValueError(f"variant {variant!r} is not known; expected one of {[*VARIANTS, *KERNEL_VARIANTS, *PEER_VARIANTS]}")


def benchmark(model: str = "convnext_atto", variants: Sequence[str] = VARIANTS, modes: Sequence[str] = MODES,
              batch: int = 8, input_size: int = 64, steps: int = 10, warmup: int = 3, device: str = "auto",
              dtype: str = "auto", channels_last: Optional[bool] = None, compile: bool = False,
              num_classes: int = 1000, rank: int = 4, dilation: int = 2, kernel_size: Optional[int] = 3,
              targets=None, v1_size: Optional[str] = None, lora_rank: Optional[int] = None,
              optimizer: str = "sgd", seed: int = 0):
    """A pandas DataFrame, one row per (variant, mode), columns COLUMNS.

    `first_order` is always measured (first) since the ratios need it. `lora_rank=None` takes the rank
    matching the quadratic term's parameter count (`matched_lora_rank`). dtype `auto` is bf16 autocast on
    a GPU, float32 on the CPU; `channels_last=None` is on, as in training.
    """
    import timm

    check_positive(batch=batch, input_size=input_size, steps=steps, warmup=warmup)
    variants = _chosen(["first_order", *variants], (*VARIANTS, *KERNEL_VARIANTS, *PEER_VARIANTS), "variants")
    modes = _chosen(modes, MODES, "modes")
    _chosen([optimizer], ("sgd", "adamw"), "optimizer")
    for variant in set(variants) & set(SIZED_VARIANTS):  # a missing size fails before anything is measured
        sized_arch(model, variant, v1_size)
    dev, amp, fmt, meta = measurement_setup(device, dtype, channels_last, compile, warmup, input_size)
    torch.manual_seed(seed)
    base = timm.create_model(model, num_classes=num_classes)

    def make_inputs():
        x = torch.randn(batch, 3, input_size, input_size, device=dev).contiguous(memory_format=fmt)
        return x, torch.randint(num_classes, (batch,), device=dev)

    nets, ranks = {}, {}
    for variant in variants:
        torch.manual_seed(seed)
        nets[variant], ranks[variant] = build_variant(
            model, variant, base, num_classes=num_classes, rank=rank, dilation=dilation, kernel_size=kernel_size,
            targets=targets, v1_size=v1_size, lora_rank=lora_rank)
        if variant in ("lora", "lora_frozen"):
            lora_rank = ranks[variant]  # computed once
        nets[variant].to(dev, memory_format=fmt)
    flops = {v: model_flops(net, (3, input_size, input_size)) for v, net in nets.items()}
    with cudnn_autotuning(dev):
        rows = _measure(nets, make_inputs, F.cross_entropy, modes, device=dev, amp_dtype=amp, compile=compile,
                        steps=steps, warmup=warmup, optimizer=optimizer)
    ranks = {v: min(r.values()) if isinstance(r, dict) else r for v, r in ranks.items()}  # per-layer LoRA: the lowest
    archs = {v: sized_arch(model, v, v1_size) if v in SIZED_VARIANTS else model for v in variants}
    rows = [dict(model=model, arch=archs[r["variant"]], rank=ranks[r["variant"]], flops=flops[r["variant"]], **meta, **r)
            for r in rows]
    return _with_ratios(rows)


def benchmark_layer(channels: int = 96, layer_kernel: int = 7, variants: Sequence[str] = LAYER_VARIANTS,
                    modes: Sequence[str] = MODES, batch: int = 8, input_size: int = 56, steps: int = 10,
                    warmup: int = 3, device: str = "auto", dtype: str = "auto", channels_last: Optional[bool] = None,
                    compile: bool = False, rank: int = 4, dilation: int = 2, kernel_size: Optional[int] = 3,
                    seed: int = 0):
    """One ConvNeXt-like depthwise conv (`channels` channels, `layer_kernel` square kernel) on an
    `input_size`^2 feature map: the bare conv (`first_order`), its quadratic adapter with the plain
    (`adapted`), the memory-efficient (`adapted_memeff`) and the standard-autograd (`adapted_autograd`) product.
    `train` = forward + backward of a random output gradient (input gradient included, as inside a network; no
    optimizer), `infer` = forward.
    """
    from ..layers import QuadraticAdapter

    check_positive(channels=channels, layer_kernel=layer_kernel, batch=batch, input_size=input_size, steps=steps,
                   warmup=warmup)
    variants = _chosen(["first_order", *variants], LAYER_VARIANTS, "variants")
    modes = _chosen(modes, MODES, "modes")
    dev, amp, fmt, meta = measurement_setup(device, dtype, channels_last, compile, warmup, input_size)
    torch.manual_seed(seed)
    conv = nn.Conv2d(channels, channels, layer_kernel, padding=layer_kernel // 2, groups=channels)

    def make_inputs():
        x = torch.randn(batch, channels, input_size, input_size, device=dev).contiguous(memory_format=fmt)
        return x.requires_grad_(), torch.randn_like(x)  # the random output gradient

    def loss_fn(out, grad):
        return (out.float() * grad).sum()

    nets = {}
    for variant in variants:
        net = copy.deepcopy(conv)
        if variant != "first_order":
            net = QuadraticAdapter(net, rank=rank, kernel_size=kernel_size, dilation=dilation,
                                   memory_efficient=variant == "adapted_memeff")
            nn.init.normal_(net.quad_out.weight, std=0.02)  # as after training: every branch gets a gradient
            net = StandardBackward(net) if variant == "adapted_autograd" else net
        nets[variant] = net.to(dev, memory_format=fmt)
    flops = {v: model_flops(net, (channels, input_size, input_size)) for v, net in nets.items()}
    with cudnn_autotuning(dev):
        rows = _measure(nets, make_inputs, loss_fn, modes, device=dev, amp_dtype=amp, compile=compile, steps=steps,
                        warmup=warmup, optimizer=None)
    rows = [dict(model=f"dwconv{layer_kernel}x{layer_kernel}_c{channels}",
                 rank=None if r["variant"] == "first_order" else rank, flops=flops[r["variant"]], **meta, **r)
            for r in rows]
    return _with_ratios(rows)
