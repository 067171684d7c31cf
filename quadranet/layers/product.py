"""The quadratic product f_a(x) * f_b(x) of two linear branches, plain or memory-efficient.

`f_a`, `f_b` are convolutions or linear maps of the same input. The plain path lets autograd keep both
branch outputs for backward; the memory-efficient path (QuadraLib's "hybrid" backprop, Xu et al. MLSys
2022) saves only the input and the weights, and recomputes the two branches in backward. Layout follows
timm `layers/activations_me.py`: forward helpers, one `autograd.Function`, one entry point.

Kernel: `bilinear` k(a, b) = a * b, the quadratic neuron. An RBF kernel exp(-(a - b)^2 / 2 sigma^2) of two
linear branches of the same input was tried and removed: it depends on (A - B) x alone, so it is a Gaussian of one
linear map, not a second-order interaction (its gradients obey dL/dA = -dL/dB exactly).
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from .grouped import ConvGeometry, grouped_conv

KERNELS = ("bilinear",)


def check_kernel(kernel: str) -> None:
    if kernel not in KERNELS:
        raise ValueError(f"kernel={kernel!r} is not supported; expected one of {KERNELS}")


def branch(x: Tensor, weight: Tensor, bias: Optional[Tensor], geom: Optional[ConvGeometry]) -> Tensor:
    return F.linear(x, weight, bias) if geom is None else grouped_conv(x, weight, bias, geom)


# Both branches run as one layer with twice the outputs: one conv (or matmul) launch instead of two, which
# on CPU makes the grouped factor convs of the adapter 1.3-1.8x faster (forward + backward). Within each
# group the fused outputs are [a_1..a_r, b_1..b_r], so the fused grouped conv sees the same inputs per group.
def fuse(t_a: Optional[Tensor], t_b: Optional[Tensor], groups: int) -> Optional[Tensor]:
    """Weights (or biases) of the two branches as those of one branch with twice the outputs."""
    if t_a is None and t_b is None:
        return None
    if t_a is None or t_b is None:  # one branch without bias: a zero bias keeps the fusion exact
        t_a = torch.zeros_like(t_b) if t_a is None else t_a
        t_b = torch.zeros_like(t_a) if t_b is None else t_b
    per = t_a.shape[0] // groups
    return torch.stack([t_a.reshape(groups, per, *t_a.shape[1:]), t_b.reshape(groups, per, *t_b.shape[1:])], 1).reshape(
        2 * t_a.shape[0], *t_a.shape[1:])


def split(y: Tensor, groups: int, geom: Optional[ConvGeometry]) -> tuple[Tensor, Tensor]:
    """The two branch outputs inside a fused output, as views of shape (N, groups, r, ...) or (..., r)."""
    if geom is None:
        return y.chunk(2, dim=-1)
    return y.unflatten(1, (groups, 2, -1)).unbind(2)  # backward stacks the two gradients: no zero-filled buffers


def _groups(geom: Optional[ConvGeometry]) -> int:
    return 1 if geom is None else geom.groups


def _flat(q: Tensor, geom: Optional[ConvGeometry]) -> Tensor:
    return q if geom is None else q.flatten(1, 2)


def product(x, weight_a, bias_a, weight_b, bias_b, geom) -> Tensor:
    """f_a(x) * f_b(x), with both branches run as one fused branch."""
    g = _groups(geom)
    a, b = split(branch(x, fuse(weight_a, weight_b, g), fuse(bias_a, bias_b, g), geom), g, geom)
    return _flat(a * b, geom)


class QuadraticProductFn(torch.autograd.Function):
    """f_a(x) * f_b(x) that keeps only x and the weights for backward and recomputes f_a(x), f_b(x) there."""

    @staticmethod
    def forward(ctx, x, weight_a, bias_a, weight_b, bias_b, geom):
        ctx.save_for_backward(x, weight_a, bias_a, weight_b, bias_b)
        ctx.geom = geom
        # Recompute under the autocast state of forward, so that backward sees the same branch outputs.
        dev = x.device.type
        ctx.autocast = (dev, torch.is_autocast_enabled(dev), torch.get_autocast_dtype(dev))
        return product(x, weight_a, bias_a, weight_b, bias_b, geom)

    @staticmethod
    def backward(ctx, grad):
        inputs = [None if t is None else t.detach().requires_grad_(need)
                  for t, need in zip(ctx.saved_tensors, ctx.needs_input_grad)]
        wanted = [t for t in inputs if t is not None and t.requires_grad]
        dev, enabled, dtype = ctx.autocast
        with torch.enable_grad(), torch.autocast(dev, dtype=dtype, enabled=enabled):
            out = product(*inputs, ctx.geom)
        grads = iter(torch.autograd.grad(out, wanted, grad))
        return (*(next(grads) if t is not None and t.requires_grad else None for t in inputs), None)


def quadratic_product(
    x: Tensor,
    weight_a: Tensor,
    bias_a: Optional[Tensor],
    weight_b: Tensor,
    bias_b: Optional[Tensor],
    geom: Optional[ConvGeometry],
    memory_efficient: bool = False,
) -> Tensor:
    """f_a(x) * f_b(x); `memory_efficient` recomputes the branches in backward instead of storing them."""
    if memory_efficient and torch.is_grad_enabled():
        return QuadraticProductFn.apply(x, weight_a, bias_a, weight_b, bias_b, geom)
    return product(x, weight_a, bias_a, weight_b, bias_b, geom)
