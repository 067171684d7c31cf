"""What an adapted network's added terms do and cost: their share of each layer's output, the network with them
switched off, FLOP counts, and the conversion report (layers, parameters and FLOPs `quadratize` added)."""
from __future__ import annotations

import contextlib
import math
import statistics
from dataclasses import asdict, dataclass
from typing import Optional, Sequence

import torch
from torch import nn

from ..layers import AdapterLayer, QuadraticConv2d, QuadraticLinear
from .inject import quadratic_adapters


def _term_and_primary(m: nn.Module, x: torch.Tensor, out: torch.Tensor):
    """(higher-order or low-rank term, first-order part) of one layer's output `out` on input `x`."""
    if isinstance(m, AdapterLayer):
        return m.term(x), m.primary(x)
    if isinstance(m, (QuadraticConv2d, QuadraticLinear)):  # V1: f_a(x) * f_b(x) beside f_c(x)
        first = (m.conv_c if isinstance(m, QuadraticConv2d) else m.fc_c)(x)
        return out - first, first
    raise TypeError(f"{type(m).__name__} has no added term")


@torch.no_grad()
def layer_shares(model: nn.Module, batches, types=(AdapterLayer, QuadraticConv2d, QuadraticLinear),
                 empty: float = math.nan) -> dict:
    """{layer name: RMS(term) / RMS(first-order output)} of every layer of `types` over the inputs `batches`
    (`empty` where the first-order output is zero throughout)."""
    sums, hooks = {}, []

    def hook(m, args, out, name):
        term, primary = _term_and_primary(m, args[0], out)
        sums.setdefault(name, torch.zeros(2, dtype=torch.float64))
        sums[name] += torch.stack([term.double().square().sum(), primary.double().square().sum()]).cpu()

    for name, m in model.named_modules():
        if isinstance(m, types):
            hooks.append(m.register_forward_hook(lambda m, a, o, n=name: hook(m, a, o, n)))
    was = model.training
    model.eval()
    try:
        for x in batches if hooks else ():
            model(x)
    finally:
        for h in hooks:
            h.remove()
        model.train(was)
    return {n: float((t / p).sqrt()) if p > 0 else empty for n, (t, p) in sums.items()}


def quadratic_share(model: nn.Module, batches) -> Optional[dict]:
    """RMS(term) / RMS(first-order output) of every quadratic (or LoRA) layer over the inputs `batches`:
    {"median", "max", "layers"} over layers, or None for a model without such layers.

    Says whether the added term does anything: 0 at the init of an adapter, and still ~0 after training
    if the term never grew.
    """
    ratios = sorted(layer_shares(model, batches).values())
    if not ratios:
        return None
    return {"median": statistics.median(ratios), "max": max(ratios), "layers": len(ratios)}


@contextlib.contextmanager
def quadratic_disabled(model: nn.Module):
    """Within the block every `QuadraticAdapter` computes its primary layer alone."""
    states = [(a, a.enabled) for _, a in quadratic_adapters(model)]
    try:
        for a, _ in states:
            a.enabled = False
        yield model
    finally:
        for a, enabled in states:
            a.enabled = enabled


def _fft_flops(shape: Sequence[int], dim: Sequence[int]) -> int:
    """2 x the authors' multiply-adds of one FFT over `dim` of a real tensor of `shape`: every one of its
    values costs ceil(log2 N), N the points transformed together."""
    n = math.prod(shape[d] for d in dim)
    return 2 * math.prod(shape) * math.ceil(math.log2(n)) if n > 1 else 0


def _r2c_flops(x_shape, dim, normalization, onesided, out_shape=None, **kwargs) -> int:
    return _fft_flops(x_shape, dim)


def _c2r_flops(x_shape, dim, normalization, last_dim_size, out_shape=None, **kwargs) -> int:
    return _fft_flops(out_shape, dim)  # counted on the real side, as the forward transform


# FFTs, which FlopCounterMode does not count, by the rule of the GFNet / HorNet authors (raoyongming/HorNet,
# calc_flops.py: N * C * ceil(log2 N) multiply-adds per 2D FFT of C channels over N points), 2 FLOPs per multiply-add
FFT_FLOP_FORMULAS = {torch.ops.aten._fft_r2c: _r2c_flops, torch.ops.aten._fft_c2r: _c2r_flops}


def count_flops(fn, *args) -> int:
    """FLOPs of `fn(*args)` (torch FlopCounterMode: 2 per multiply-add; FFTs by FFT_FLOP_FORMULAS), convolutions
    counted as written."""
    from torch.utils.flop_counter import FlopCounterMode

    from ..layers.grouped import conv_formulation

    with FlopCounterMode(display=False, custom_mapping=FFT_FLOP_FORMULAS) as counter, torch.no_grad(), conv_formulation():
        fn(*args)
    return counter.get_total_flops()


def model_flops(model: nn.Module, input_size: Sequence[int]) -> int:
    """Forward FLOPs of `model` (in eval mode) on one random input of `input_size` (C, H, W)."""
    p = next(model.parameters())
    was = model.training
    model.eval()
    try:
        return count_flops(model, torch.randn(1, *input_size, device=p.device, dtype=p.dtype))
    finally:
        model.train(was)


@dataclass
class ConvertedLayer:
    name: str
    primary: str  # e.g. "Conv2d(96, 96, k=7, g=96)"
    rank: int
    kernel_size: Optional[tuple]
    dilation: Optional[tuple]
    params_primary: int
    params_added: int
    flops_added: int


@dataclass
class ConversionReport:
    layers: list
    params_model: int  # parameters of the converted model
    params_added: int
    flops_model: int  # FLOPs of one forward of the converted model at `input_size`
    flops_added: int
    input_size: tuple

    @property
    def params_overhead(self) -> float:
        return self.params_added / (self.params_model - self.params_added)

    @property
    def flops_overhead(self) -> float:
        return self.flops_added / (self.flops_model - self.flops_added)

    def rows(self) -> list[dict]:
        return [asdict(r) for r in self.layers]

    def __str__(self) -> str:
        return (f"{len(self.layers)} layers converted: +{self.params_added:,} params "
                f"({100 * self.params_overhead:.2f}%), +{self.flops_added:,} FLOPs "
                f"({100 * self.flops_overhead:.2f}%) at input {self.input_size}, on a model of "
                f"{self.params_model - self.params_added:,} params and {self.flops_model - self.flops_added:,} FLOPs")


def conversion_report(model: nn.Module, input_size: Sequence[int] = (3, 224, 224)) -> ConversionReport:
    """What `quadratize` changed in `model`: layers, parameters and FLOPs added at one input of `input_size`.

    FLOPs are those torch's FlopCounterMode counts (2 per multiply-add of convolutions and matrix
    products, per image); elementwise products are left out, as in the usual FLOP tables.
    """
    found = list(quadratic_adapters(model))
    if not found:
        raise ValueError(f"{type(model).__name__} holds no QuadraticAdapter; call quadratize() first")
    p = next(model.parameters())
    x = torch.randn(1, *input_size, device=p.device, dtype=p.dtype)
    inputs = {}
    hooks = [a.register_forward_pre_hook(lambda m, args, n=name: inputs.__setitem__(n, args[0]))
             for name, a in found]
    was_training = model.training
    model.eval()
    try:
        flops = count_flops(model, x)
        # an adapter adds exactly its quadratic term: count that on the input it saw
        per_layer = {name: count_flops(a.quadratic, inputs[name]) for name, a in found}
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    rows = []
    for name, a in found:
        prim = a.primary
        desc = (f"Conv2d({prim.in_channels}, {prim.out_channels}, k={prim.kernel_size[0]}, g={prim.groups})"
                if isinstance(prim, nn.Conv2d) else f"Linear({prim.in_features}, {prim.out_features})")
        added = sum(q.numel() for n, q in a.named_parameters() if not n.startswith("primary."))
        rows.append(ConvertedLayer(name, desc, a.rank, a.kernel_size, a.dilation,
                                   sum(q.numel() for q in prim.parameters()), added, per_layer[name]))
    return ConversionReport(
        layers=rows,
        params_model=sum(q.numel() for q in model.parameters()),
        params_added=sum(r.params_added for r in rows),
        flops_model=flops,
        flops_added=sum(per_layer.values()),
        input_size=tuple(input_size),
    )
