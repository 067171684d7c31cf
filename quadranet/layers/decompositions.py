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

from .grouped import ConvGeometry, _trim

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


@register_decomposition("quadranet_cpu::dwq_forward")
def dwq_forward(x: Tensor, wa: Tensor, wb: Tensor, p: Tensor, kernel, stride, padding, dilation) -> Tensor:
    """sum_r P_r (A_r * x)(B_r * x) per channel (x: N C H W; wa, wb: taps x rank x C; p: rank x C).

    Written for ONNX Runtime and OpenVINO: P is folded into A, each rank is a pair of multiplier-1 depthwise
    convs (the runtimes' fast depthwise kernels; one grouped conv with 2 x rank outputs per channel ran 2-7x
    slower there), and kernel taps that read only padding are dropped as in the eager CPU path, so a factor that
    reads one tap on a small map is an elementwise product."""
    taps, rank, c = wa.shape
    kh, kw = kernel
    a = (wa * p.unsqueeze(0)).permute(1, 2, 0).reshape(rank, c, 1, kh, kw)
    b = wb.permute(1, 2, 0).reshape(rank, c, 1, kh, kw)
    stride, padding, dilation = tuple(stride), tuple(padding), tuple(dilation)
    trim = _trim(x, (kh, kw), ConvGeometry(stride, padding, dilation, c))
    if trim is not None:
        x, rows, cols = trim
        a, b, padding = a[..., rows, cols], b[..., rows, cols], (0, 0)
        if a.shape[-2:] == (1, 1):  # one tap: x^2 * sum_r P_r A_r B_r
            xs = x[..., ::stride[0], ::stride[1]]
            return xs * xs * (a * b).sum(0).reshape(1, c, 1, 1)
    out = None
    for r in range(rank):
        term = F.conv2d(x, a[r], None, stride, padding, dilation, c) * F.conv2d(x, b[r], None, stride, padding,
                                                                                 dilation, c)
        out = term if out is None else out + term
    return out
