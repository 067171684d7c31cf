"""Standard-op decompositions of the library's custom CPU operators, so that exported models carry none of them.

`torch.export` records the fused kernels (`layers/fused.py`, namespace `quadranet_cpu`) as custom ops, which
neither ONNX nor another runtime can run. Each op registers here a function of the op's own arguments that
computes the same output from standard ATen ops; `quadranet.export` replaces every custom op of an exported graph
by its decomposition (`ExportedProgram.run_decompositions`) and refuses a graph whose custom op has none. A new
kernel needs only its decomposition here, equal to the kernel in float64 (`tests/layers/test_decompositions.py`).
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from .grouped import ConvGeometry, live_taps

NAMESPACE = "quadranet_cpu"
DECOMPOSITIONS: dict[str, Callable] = {}  # "quadranet_cpu::op" -> function of the op's arguments


def register_decomposition(name: str) -> Callable:
    """Decorator: `fn` computes custom op `name` ("namespace::op") from standard ops."""
    def wrap(fn: Callable) -> Callable:
        DECOMPOSITIONS[name] = fn
        return fn
    return wrap


def decomposition_table() -> dict:
    """{OpOverload: decomposition} of the registered ops that are loaded (an op never built cannot be in a graph)."""
    table = {}
    for name, fn in DECOMPOSITIONS.items():
        namespace, op = name.split("::")
        packet = getattr(getattr(torch.ops, namespace), op, None) if hasattr(torch.ops, namespace) else None
        if packet is not None:
            for overload in packet.overloads():
                table[getattr(packet, overload)] = fn
    return table


def is_custom(target) -> bool:
    """True for an op of the library's own namespace (anything an exported file must not carry)."""
    return isinstance(target, torch._ops.OpOverload) and target.namespace == NAMESPACE


def _trimmed(x_a: Tensor, x_b: Tensor, wa: Tensor, wb: Tensor, kernel, stride, padding, dilation):
    """(x_a, x_b, A, B as (rank, C, 1, kh, kw), padding) with the kernel taps that read only padding dropped, as in
    the eager CPU path (on the small maps of a 32 px network most taps of a dilated factor do)."""
    taps, rank, c = wa.shape
    a, b = (w.permute(1, 2, 0).reshape(rank, c, 1, *kernel) for w in (wa, wb))
    geom = ConvGeometry(tuple(stride), tuple(padding), tuple(dilation), c)
    trim = live_taps(x_a, tuple(kernel), geom)
    if trim is None:
        return x_a, x_b, a, b, tuple(padding)
    one = x_b is x_a
    x_a, rows, cols = trim
    x_b = x_a if one else live_taps(x_b, tuple(kernel), geom)[0]
    return x_a, x_b, a[..., rows, cols], b[..., rows, cols], (0, 0)


def _depthwise(x: Tensor, w: Tensor, stride, padding, dilation) -> Tensor:
    """A multiplier-1 depthwise conv (the runtimes' fast depthwise kernel: one grouped conv with 2 x rank outputs
    per channel ran several times slower in ONNX Runtime); one tap without padding: a per-channel scale."""
    if w.shape[-2:] == (1, 1) and tuple(padding) == (0, 0):
        return x[..., ::stride[0], ::stride[1]] * w.reshape(1, -1, 1, 1)
    return F.conv2d(x, w, None, stride, padding, dilation, w.shape[0])


def _sum(terms: list) -> Tensor:
    out = terms[0]
    for t in terms[1:]:
        out = out + t
    return out


@register_decomposition("quadranet_cpu::dwq_forward")
def dwq_forward(x: Tensor, wa: Tensor, wb: Tensor, p: Tensor, kernel, stride, padding, dilation) -> Tensor:
    """sum_r P_r (A_r * x)(B_r * x) per channel (x: N C H W; wa, wb: taps x rank x C; p: rank x C): the quadratic
    term of a depthwise adapter."""
    return dwk_forward(x, x, wa, wb, p, 0, kernel, stride, padding, dilation)


@register_decomposition("quadranet_cpu::dwk_forward")
def dwk_forward(xa: Tensor, xb: Tensor, wa: Tensor, wb: Tensor, p: Tensor, kind: int, kernel, stride, padding,
                dilation) -> Tensor:
    """Kernel `kind` per channel: 0 (bilinear) sum_r P_r (A_r * xa)(B_r * xb), P folded into A, and with one input
    and one tap left x^2 * sum_r P_r A_r B_r; 1 (the rbf exponent) sum_r P_r (GELU(A_r * xa) - GELU(B_r * xb))^2,
    GELU exact (erf-based) as in the kernel."""
    rank, c = p.shape
    one = xb is xa
    xa, xb, a, b, padding = _trimmed(xa, xb, wa, wb, kernel, stride, padding, dilation)
    s = p.reshape(rank, c, 1, 1, 1)
    if kind == 0:
        a = a * s
        if one and a.shape[-2:] == (1, 1) and padding == (0, 0):
            xs = xa[..., ::stride[0], ::stride[1]]
            return xs * xs * (a * b).sum(0).reshape(1, c, 1, 1)
        return _sum([_depthwise(xa, a[r], stride, padding, dilation) * _depthwise(xb, b[r], stride, padding, dilation)
                     for r in range(rank)])
    if kind == 1:
        return _sum([s[r].reshape(1, c, 1, 1) * (F.gelu(_depthwise(xa, a[r], stride, padding, dilation))
                                                 - F.gelu(_depthwise(xb, b[r], stride, padding, dilation))).square()
                     for r in range(rank)])
    raise ValueError(f"dwk_forward: kind={kind} has no decomposition; expected 0 (bilinear) or 1 (rbf)")


@register_decomposition("quadranet_cpu::rbf_tail_forward")
def rbf_tail_forward(e: Tensor, p: Tensor, a: Tensor, b: Tensor) -> Tensor:
    """p exp(a e + b) per channel (p, a, b: C): the rbf term's BatchNorm (folded into a, b), exp and P."""
    def channel(t: Tensor) -> Tensor:
        return t.reshape(1, -1, *([1] * (e.dim() - 2)))

    return channel(p) * torch.exp(channel(a) * e + channel(b))


@register_decomposition("quadranet_cpu::channel_stats")
def channel_stats(e: Tensor) -> list:
    """[biased variance, mean] per channel over all other dimensions (BatchNorm's batch statistics)."""
    var, mean = torch.var_mean(e, dim=[d for d in range(e.dim()) if d != 1], unbiased=False)
    return [var, mean]
