"""The quadratic product f_a(x) * f_b(x) of two linear branches, plain or memory-efficient.

`f_a`, `f_b` are convolutions or linear maps of the same input. The plain path lets autograd keep both
branch outputs for backward; the memory-efficient path (QuadraLib's "hybrid" backprop, Xu et al. MLSys
2022) saves only the input and the weights, and recomputes the two branches in backward. Layout follows
timm `layers/activations_me.py`: forward helpers, one `autograd.Function`, one entry point.

Kernels (`KERNELS`), as in the authors' code (`miniHuiHui/InfiNet`, `InfiNet.py`: `Kernel_Conv`, `Linear_kernel`,
`RBF_kernel`, `RBF_kernel_in`; the same in `miniHuiHui/InfiNet_det`, `object_detection/models/QuadraNet_v2.py`):
- `bilinear`: the product a_i * b_i of each pair of factors (theirs: sum_i A_i x * B_i x, the quadratic neuron);
- `rbf`: the exponent sum_i (GELU(a_i) - GELU(b_i))^2 / (2 sigma^2) over the factors i of a group, which the
  adapter normalises (BatchNorm over channels) and exponentiates, exp(-BN(.)). The GELU on each branch makes it
  depend on A and B separately: without it, (A x - B x)^2 is a function of (A - B) x alone and dL/dA = -dL/dB;
- `rbf_in`: the same exponent with A on P_a x and B on P_b x (P_a, P_b dense 1x1 convs with bias), computed here
  from the two projected inputs.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from .grouped import ConvGeometry, grouped_conv

KERNELS = ("bilinear", "rbf", "rbf_in")
RBF_KERNELS = ("rbf", "rbf_in")


def check_kernel(kernel: str, allowed: tuple = KERNELS, where: str = "") -> None:
    if kernel not in allowed:
        raise ValueError(f"kernel={kernel!r} is not supported{where}; expected one of {allowed}")


def check_sigma(sigma: float) -> float:
    """The RBF width sigma as a float; ValueError unless it is a finite number > 0."""
    if isinstance(sigma, bool) or not isinstance(sigma, (int, float)) or not 0 < float(sigma) < float("inf"):
        raise ValueError(f"sigma={sigma!r} must be a finite number > 0 (the RBF kernel's width)")
    return float(sigma)


def branch(x: Tensor, weight: Tensor, bias: Optional[Tensor], geom: Optional[ConvGeometry]) -> Tensor:
    return F.linear(x, weight, bias) if geom is None else grouped_conv(x, weight, bias, geom)


# Both branches run as one layer with twice the outputs: one conv (or matmul) launch instead of two, which
# on CPU makes the grouped factor convs of the adapter faster (forward + backward). Within each
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


def rbf_exponent(x_a: Tensor, x_b: Optional[Tensor], weight_a: Tensor, weight_b: Tensor, geom: Optional[ConvGeometry],
                 scale: float) -> Tensor:
    """scale * sum_i (GELU(A_i x_a) - GELU(B_i x_b))^2 over the factors i of each group: (N, groups, H, W) for a
    conv, (..., 1) for a linear branch. `x_b=None`: both branches read x_a (one fused launch)."""
    g = _groups(geom)
    if x_b is None:
        a, b = split(branch(x_a, fuse(weight_a, weight_b, g), None, geom), g, geom)
    else:
        a, b = branch(x_a, weight_a, None, geom), branch(x_b, weight_b, None, geom)
        if geom is not None:
            a, b = a.unflatten(1, (g, -1)), b.unflatten(1, (g, -1))
    d = F.gelu(a) - F.gelu(b)
    return d.square().sum(2 if geom is not None else -1, keepdim=geom is None) * scale


class RBFExponentFn(torch.autograd.Function):
    """`rbf_exponent` that keeps only its inputs and the weights for backward and recomputes the factors there."""

    @staticmethod
    def forward(ctx, x_a, x_b, weight_a, weight_b, geom, scale):
        ctx.save_for_backward(x_a, x_b, weight_a, weight_b)
        ctx.geom, ctx.scale = geom, scale
        dev = x_a.device.type
        ctx.autocast = (dev, torch.is_autocast_enabled(dev), torch.get_autocast_dtype(dev))
        return rbf_exponent(x_a, x_b, weight_a, weight_b, geom, scale)

    @staticmethod
    def backward(ctx, grad):
        inputs = [None if t is None else t.detach().requires_grad_(need)
                  for t, need in zip(ctx.saved_tensors, ctx.needs_input_grad)]
        wanted = [t for t in inputs if t is not None and t.requires_grad]
        dev, enabled, dtype = ctx.autocast
        with torch.enable_grad(), torch.autocast(dev, dtype=dtype, enabled=enabled):
            out = rbf_exponent(*inputs, ctx.geom, ctx.scale)
        grads = iter(torch.autograd.grad(out, wanted, grad))
        return (*(next(grads) if t is not None and t.requires_grad else None for t in inputs), None, None)


def rbf_term_exponent(x_a: Tensor, x_b: Optional[Tensor], weight_a: Tensor, weight_b: Tensor,
                      geom: Optional[ConvGeometry], scale: float, memory_efficient: bool = False) -> Tensor:
    """`rbf_exponent`; `memory_efficient` recomputes the factors in backward instead of storing them."""
    if memory_efficient and torch.is_grad_enabled():
        return RBFExponentFn.apply(x_a, x_b, weight_a, weight_b, geom, scale)
    return rbf_exponent(x_a, x_b, weight_a, weight_b, geom, scale)
