"""Grouped convolutions as the adapters use them, with faster CPU paths for small feature maps and projections.

The adapters' factor convs have one input channel per group and several outputs per channel (2 x rank
for the fused quadratic factors, rank for LoRA), and their projections back are grouped 1x1 convs with
one output per group. On the CPU: kernel taps that read only padding are dropped (on the 1 x 1 and 2 x 2
maps of a 32 px ConvNeXt a 3 x 3 dilation-2 factor reads its centre tap alone, and the conv becomes a
per-channel scale), small maps go through im2col + batched matmul, and the projection is a multiply-and-sum,
faster there than oneDNN's grouped conv. On other devices, and inside `conv_formulation`, both call `F.conv2d`.
"""
from __future__ import annotations

import functools
import math
from contextlib import contextmanager
from typing import NamedTuple, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

_FAST_CPU = [True]


@contextmanager
def conv_formulation():
    """Run the plain `F.conv2d` formulation everywhere, e.g. so that FLOP counters see convolutions."""
    _FAST_CPU.append(False)
    try:
        yield
    finally:
        _FAST_CPU.pop()


def fast_cpu(x: Tensor) -> bool:
    """True where the CPU formulations below apply (a CPU tensor, outside `conv_formulation`)."""
    return x.device.type == "cpu" and _FAST_CPU[-1]


class ConvGeometry(NamedTuple):
    """stride, padding, dilation, groups of a conv branch; `None` in their place means a linear branch."""

    stride: tuple
    padding: object  # tuple of ints or 'same' / 'valid'
    dilation: tuple
    groups: int


def numeric_padding(geom: ConvGeometry, kernel_size: tuple) -> tuple:
    """'same' / 'valid' as numbers ('same' here always has stride 1 and an even dilated extent)."""
    if not isinstance(geom.padding, str):
        return tuple(geom.padding)
    if geom.padding == "valid":
        return (0, 0)
    return tuple(d * (k - 1) // 2 for d, k in zip(geom.dilation, kernel_size))


def _out_size(x: Tensor, kernel_size: tuple, pad: tuple, geom: ConvGeometry) -> tuple:
    return tuple((size + 2 * p - d * (k - 1) - 1) // s + 1
                 for size, p, d, k, s in zip(x.shape[-2:], pad, geom.dilation, kernel_size, geom.stride))


def _columns(x: Tensor, kernel_size: tuple, geom: ConvGeometry) -> tuple[Tensor, tuple, tuple]:
    """im2col of x as (channels, kh * kw, n * ho * wo), with the padding used and the output size."""
    n, c = x.shape[:2]
    pad = numeric_padding(geom, kernel_size)
    cols = F.unfold(x, kernel_size, geom.dilation, pad, geom.stride)  # (n, c * kh * kw, ho * wo)
    taps = kernel_size[0] * kernel_size[1]
    return cols.view(n, c, taps, -1).permute(1, 2, 0, 3).reshape(c, taps, -1), pad, _out_size(x, kernel_size, pad, geom)


class DepthwiseUnfoldFn(torch.autograd.Function):
    """A conv with one input channel per group (any channel multiplier), as im2col + one batched matmul.

    Equal to `F.conv2d`. On the CPU, oneDNN runs such convs with a channel multiplier (the adapter's fused
    factor convs have 2 x rank outputs per channel) slowly on small feature maps: there (<= 4 x 4 outputs)
    this is faster, forward + backward; from 8 x 8 on, the conv is faster. Like the conv, it keeps only x and the
    weight for backward, not the columns.
    """

    @staticmethod
    def forward(ctx, x, weight, geom):
        n, c = x.shape[:2]
        kernel_size = tuple(weight.shape[-2:])
        cols, _, (ho, wo) = _columns(x, kernel_size, geom)
        y = torch.bmm(weight.view(c, -1, cols.shape[1]), cols)  # (c, mult, n * ho * wo)
        ctx.save_for_backward(x, weight)
        ctx.geom = geom
        return y.view(-1, n, ho, wo).transpose(0, 1).contiguous()

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        n, c, h, w = x.shape
        kernel_size = tuple(weight.shape[-2:])
        geom = ctx.geom
        cols, pad, _ = _columns(x, kernel_size, geom)
        taps = cols.shape[1]
        g = grad.reshape(n, c, -1, grad.shape[-2] * grad.shape[-1]).permute(1, 2, 0, 3).reshape(c, -1, cols.shape[2])
        gx = gw = None
        if ctx.needs_input_grad[1]:
            gw = torch.bmm(g, cols.transpose(1, 2)).view_as(weight)
        if ctx.needs_input_grad[0]:
            gcols = torch.bmm(weight.view(c, -1, taps).transpose(1, 2), g)  # (c, taps, n * l)
            gcols = gcols.view(c, taps, n, -1).permute(2, 0, 1, 3).reshape(n, c * taps, -1)
            gx = F.fold(gcols, (h, w), kernel_size, geom.dilation, pad, geom.stride)
        return gx, gw, None


@functools.lru_cache(maxsize=None)
def _live(size: int, k: int, s: int, p: int, d: int) -> tuple[int, int, int, int]:
    """(first, last + 1) of the taps along one axis that read the input at some output, and the (left, right)
    padding (negative: cropping) that keeps the output size once the others are dropped."""
    out = (size + 2 * p - d * (k - 1) - 1) // s + 1
    live = [i for i in range(k) if any(0 <= o * s + i * d - p < size for o in range(out))] or [0, k - 1]
    first, last = live[0], live[-1]
    left = p - first * d
    return first, last + 1, left, (out - 1) * s + d * (last - first) + 1 - size - left


def live_taps(x: Tensor, kernel_size: tuple, geom: ConvGeometry):
    """(x padded explicitly, kernel rows, kernel columns) of the taps that read the input, or None where all do.

    On small feature maps a dilated kernel reaches mostly into the padding (a 3 x 3 dilation-2 factor on a 2 x 2
    map reads only its centre tap): dropping those taps is exact and spares the conv their work."""
    pad = numeric_padding(geom, kernel_size)
    (h0, h1, top, bottom), (w0, w1, left, right) = (
        _live(size, k, s, p, d) for size, k, s, p, d in zip(x.shape[-2:], kernel_size, geom.stride, pad, geom.dilation))
    if (h1 - h0, w1 - w0) == tuple(kernel_size):
        return None
    if max(left, right, top, bottom) <= 0:  # a crop: a view, not a copy
        x = x[..., -top:x.shape[-2] + bottom, -left:x.shape[-1] + right]
    else:
        x = F.pad(x, (left, right, top, bottom))
    return x, slice(h0, h1), slice(w0, w1)


def one_tap(x: Tensor, kernel_size: tuple, geom: ConvGeometry) -> Optional[tuple[Tensor, tuple[int, int]]]:
    """(x on the output grid, (row, column) of the tap) where a conv of this geometry reads a single tap of its
    kernel at every output (CPU only), else None. Then a conv with one input channel per group is elementwise."""
    trim = live_taps(x, kernel_size, geom) if fast_cpu(x) else None
    if trim is None or (trim[1].stop - trim[1].start, trim[2].stop - trim[2].start) != (1, 1):
        return None
    xp, rows, cols = trim
    return xp[..., ::geom.stride[0], ::geom.stride[1]], (rows.start, cols.start)


def strided_like(weight: Tensor, memory_format: torch.memory_format) -> Tensor:
    """`weight` with the strides of `memory_format`. A (C, 1, k, k) weight counts as contiguous in both formats, so
    `.contiguous(memory_format=...)` keeps its strides, yet oneDNN picks its kernel by them: a channels-last
    depthwise conv with an NCHW-strided weight runs on a far slower kernel."""
    return torch.empty_like(weight, memory_format=memory_format).copy_(weight)


SMALL_MAP = 16  # output pixels up to which DepthwiseUnfoldFn beats oneDNN (measured: 4 x 4 yes, 8 x 8 no)


def grouped_conv(x: Tensor, weight: Tensor, bias: Optional[Tensor], geom: ConvGeometry) -> Tensor:
    """`F.conv2d` with the geometry `geom`. On the CPU, without the kernel taps that read only padding, and for
    one input channel per group: an elementwise product where one tap is left, `DepthwiseUnfoldFn` on small maps."""
    if not fast_cpu(x):
        return F.conv2d(x, weight, bias, geom.stride, geom.padding, geom.dilation, geom.groups)
    trim = live_taps(x, weight.shape[-2:], geom)
    if trim is not None:
        x, rows, cols = trim
        weight, geom = weight[..., rows, cols].contiguous(), geom._replace(padding=(0, 0))
    if weight.shape[1] == 1 and geom.groups == x.shape[1] > 1:
        if geom.stride != (1, 1):  # oneDNN's strided channels-last kernel for these is slower than its NCHW one
            x = x.contiguous()
        elif x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
            weight = strided_like(weight, torch.channels_last)
        if trim is not None and weight.shape[-2:] == (1, 1):
            xs = x[..., ::geom.stride[0], ::geom.stride[1]]
            y = (xs.unsqueeze(2) * weight.view(geom.groups, -1, 1, 1)).flatten(1, 2)
            return y if bias is None else y + bias.view(1, -1, 1, 1)
        pad = numeric_padding(geom, weight.shape[-2:])
        if math.prod(_out_size(x, weight.shape[-2:], pad, geom)) <= SMALL_MAP:
            y = DepthwiseUnfoldFn.apply(x, weight, geom)
            return y if bias is None else y + bias.view(1, -1, 1, 1)
    return F.conv2d(x, weight, bias, geom.stride, geom.padding, geom.dilation, geom.groups)


def grouped_pointwise(q: Tensor, weight: Tensor, groups: int) -> Tensor:
    """The 1x1 grouped conv that projects the factors back (the adapter's P); on the CPU, where each group has
    one output (depthwise primaries), a multiply-and-sum, which is faster there than oneDNN's conv."""
    if fast_cpu(q) and weight.shape[0] == groups:
        return (q.unflatten(1, (groups, -1)) * weight.view(1, groups, -1, 1, 1)).sum(2)
    return F.conv2d(q, weight, None, 1, 0, 1, groups)
