"""The quadratic product k(f_a(x), f_b(x)) of two linear branches, plain or memory-efficient.

`f_a`, `f_b` are convolutions or linear maps of the same input. The plain path lets autograd keep both
branch outputs for backward; the memory-efficient path (QuadraLib's "hybrid" backprop, Xu et al. MLSys
2022) saves only the input and the weights, and recomputes the two branches in backward. Layout follows
timm `layers/activations_me.py`: forward and backward helpers, one `autograd.Function`, one entry point.

Kernels: `bilinear` k(a, b) = a * b (the quadratic neuron), `rbf` k(a, b) = exp(-(a - b)^2 / 2 sigma^2).
"""
from __future__ import annotations

from typing import NamedTuple, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

KERNELS = ("bilinear", "rbf")


class ConvGeometry(NamedTuple):
    """stride, padding, dilation, groups of a conv branch; `None` in their place means a linear branch."""

    stride: tuple
    padding: object  # tuple of ints or 'same' / 'valid'
    dilation: tuple
    groups: int


def check_kernel(kernel: str, sigma: float) -> None:
    if kernel not in KERNELS:
        raise ValueError(f"kernel={kernel!r} is not supported; expected one of {KERNELS}")
    if kernel == "rbf" and not sigma > 0:
        raise ValueError(f"sigma={sigma!r} must be > 0 for the rbf kernel")


def branch(x: Tensor, weight: Tensor, bias: Optional[Tensor], geom: Optional[ConvGeometry]) -> Tensor:
    if geom is None:
        return F.linear(x, weight, bias)
    return F.conv2d(x, weight, bias, geom.stride, geom.padding, geom.dilation, geom.groups)


def kernel_fwd(a: Tensor, b: Tensor, kernel: str, sigma: float) -> Tensor:
    if kernel == "bilinear":
        return a * b
    return torch.exp((a - b).square() * (-0.5 / sigma**2))


def kernel_bwd(a: Tensor, b: Tensor, grad: Tensor, kernel: str, sigma: float) -> tuple[Tensor, Tensor]:
    """Gradients of k(a, b) with respect to a and b, given the output gradient."""
    if kernel == "bilinear":
        return grad * b, grad * a
    diff = a - b
    ga = grad * torch.exp(diff.square() * (-0.5 / sigma**2)) * diff * (-1.0 / sigma**2)
    return ga, -ga


def branch_bwd(x: Tensor, weight: Tensor, grad: Tensor, geom: Optional[ConvGeometry], needs: tuple):
    """(grad_x, grad_weight, grad_bias) of one linear branch; entries not in `needs` are None."""
    gx = gw = gb = None
    if geom is None:
        if needs[0]:
            gx = grad @ weight.to(grad.dtype)
        flat_g = grad.reshape(-1, grad.shape[-1])
        if needs[1]:
            gw = flat_g.t() @ x.reshape(-1, x.shape[-1]).to(grad.dtype)
        if needs[2]:
            gb = flat_g.sum(0)
        return gx, gw, gb
    padding = geom.padding
    if isinstance(padding, str):  # conv2d_input/weight want numbers; 'same' here always has stride 1
        kh, kw = weight.shape[-2:]
        padding = (0, 0) if padding == "valid" else (geom.dilation[0] * (kh - 1) // 2, geom.dilation[1] * (kw - 1) // 2)
    if needs[0]:
        gx = torch.nn.grad.conv2d_input(x.shape, weight.to(grad.dtype), grad, geom.stride, padding, geom.dilation, geom.groups)
    if needs[1]:
        gw = torch.nn.grad.conv2d_weight(x.to(grad.dtype), weight.shape, grad, geom.stride, padding, geom.dilation, geom.groups)
    if needs[2]:
        gb = grad.sum((0, 2, 3))
    return gx, gw, gb


class QuadraticProductFn(torch.autograd.Function):
    """k(f_a(x), f_b(x)) that keeps only x and the weights for backward and recomputes f_a(x), f_b(x)."""

    @staticmethod
    def forward(ctx, x, weight_a, bias_a, weight_b, bias_b, geom, kernel, sigma):
        a = branch(x, weight_a, bias_a, geom)
        b = branch(x, weight_b, bias_b, geom)
        ctx.save_for_backward(x, weight_a, bias_a, weight_b, bias_b)
        ctx.geom, ctx.kernel, ctx.sigma = geom, kernel, sigma
        # Recompute under the autocast state of forward, so that backward sees the same a and b.
        dev = x.device.type
        ctx.autocast = (dev, torch.is_autocast_enabled(dev), torch.get_autocast_dtype(dev))
        return kernel_fwd(a, b, kernel, sigma)

    @staticmethod
    def backward(ctx, grad):
        x, weight_a, bias_a, weight_b, bias_b = ctx.saved_tensors
        geom, kernel, sigma = ctx.geom, ctx.kernel, ctx.sigma
        dev, enabled, dtype = ctx.autocast
        with torch.autocast(dev, dtype=dtype, enabled=enabled):
            a = branch(x, weight_a, bias_a, geom)
            b = branch(x, weight_b, bias_b, geom)
        ga, gb = kernel_bwd(a, b, grad.to(a.dtype), kernel, sigma)
        del a, b
        need = ctx.needs_input_grad
        gx_a, gwa, gba = branch_bwd(x, weight_a, ga, geom, (need[0], need[1], bias_a is not None and need[2]))
        del ga
        gx_b, gwb, gbb = branch_bwd(x, weight_b, gb, geom, (need[0], need[3], bias_b is not None and need[4]))
        gx = None if gx_a is None else (gx_a + gx_b).to(x.dtype)

        def cast(g, ref):
            return None if g is None else g.to(ref.dtype)

        return gx, cast(gwa, weight_a), cast(gba, bias_a), cast(gwb, weight_b), cast(gbb, bias_b), None, None, None


def quadratic_product(
    x: Tensor,
    weight_a: Tensor,
    bias_a: Optional[Tensor],
    weight_b: Tensor,
    bias_b: Optional[Tensor],
    geom: Optional[ConvGeometry],
    kernel: str = "bilinear",
    sigma: float = 1.0,
    memory_efficient: bool = False,
) -> Tensor:
    """k(f_a(x), f_b(x)); `memory_efficient` recomputes the branches in backward instead of storing them."""
    if memory_efficient and torch.is_grad_enabled():
        return QuadraticProductFn.apply(x, weight_a, bias_a, weight_b, bias_b, geom, kernel, sigma)
    return kernel_fwd(branch(x, weight_a, bias_a, geom), branch(x, weight_b, bias_b, geom), kernel, sigma)
