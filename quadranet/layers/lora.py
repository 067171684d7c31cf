"""The linear baseline of the QuadraNet V2 adapter: a low-rank (LoRA) term beside a pretrained layer.

    y = primary(x) + B(A(x))

(Hu et al., "LoRA", arXiv 2106.09685.) This is `QuadraticAdapter` with the product of two factors
replaced by one factor: for a conv, A is a conv with the primary's stride and groups and its own kernel
size and dilation (`None`: the primary's; padded like the quadratic factors, `atrous_padding`, so the
output grid is the primary's) producing `rank` channels per group, and B a grouped 1x1 conv back to the
output channels; for a linear layer A, B are projections through `rank` features. B is zero-initialised, so at init the
layer computes exactly the primary; A keeps torch's default (LoRA's kaiming-uniform) init. No
alpha / r scaling: it only rescales the learning rate of B.

Why not peft: peft's conv LoRA drops the base layer's `dilation` (huggingface/peft#3697), and for grouped
convs it shares `r` across the groups, so `r` must be divisible by `groups` (huggingface/peft#2567): a
depthwise conv of C channels would need r >= C. Here the rank is per group, as for the quadratic term,
so the two adapters are compared on the same layers at a matched parameter budget.
"""
from __future__ import annotations

import copy
from typing import Optional, Union

import torch
import torch.nn.functional as F
from timm.layers.padding import pad_same
from torch import Tensor, nn

from .adapter import AdapterLayer
from .grouped import ConvGeometry, fast_cpu, grouped_conv, grouped_pointwise, numeric_padding


class LowRankAdapter(AdapterLayer):
    """Wraps a first-order `nn.Conv2d` or `nn.Linear` (the primary term) and adds a rank-r linear term."""

    term_name = "low-rank"

    # the constructor's signature repeats QuadraticAdapter's first arguments (alike on purpose): the
    # defaults differ (LoRA: the primary's kernel, no dilation); the work is AdapterLayer's
    def __init__(
        self,
        primary: Union[nn.Conv2d, nn.Linear],
        rank: int = 4,
        kernel_size: Optional[int] = None,
        dilation: Optional[int] = 1,
        freeze_primary: bool = False,
        name: str = "",
    ):
        super().__init__(primary, rank, kernel_size, dilation, freeze_primary, name)
        self.lora_a = self.factor()
        self.lora_b = self.projection()

    def low_rank(self, x: Tensor) -> Tensor:
        """The low-rank term alone, B(A(x))."""
        if self.tf_same:
            x = pad_same(x, self.kernel_size, self.lora_a.stride, self.dilation)
        a, b = self.lora_a, self.lora_b
        if isinstance(a, nn.Linear):
            return b(a(x))
        h = grouped_conv(x, a.weight, None, ConvGeometry(a.stride, a.padding, a.dilation, a.groups))
        return grouped_pointwise(h, b.weight, b.groups)

    def term(self, x: Tensor) -> Tensor:
        return self.low_rank(x)

    def forward(self, x: Tensor) -> Tensor:
        if self.enabled and self.mergeable and fast_cpu(x):  # one layer with weight W + B A: B A costs a
            return self._merged_forward(x)  # weight-sized product
        return super().forward(x)

    def _merged_forward(self, x: Tensor) -> Tensor:
        p = self.primary
        # with the primary weight's strides, by which oneDNN picks its kernel (see `strided_like`)
        weight = torch.empty_like(p.weight).copy_(p.weight + self.delta_weight())
        if isinstance(p, nn.Linear):
            return F.linear(x, weight, p.bias)
        if self.tf_same:
            return F.conv2d(pad_same(x, p.kernel_size, p.stride, p.dilation), weight, p.bias, p.stride, 0, p.dilation,
                            p.groups)
        return p._conv_forward(x, weight, p.bias)

    def _taps(self) -> Optional[tuple]:
        """Per axis, the index in the primary's kernel of each tap of A, or None where a tap of A reads pixels that
        no tap of the primary reads. A (same stride and groups) reads offset i d_A - p_A of each output position,
        the primary j d - p: a smaller or dilated A (3 x 3, dilation 2 inside a 7 x 7) sits on the primary's taps."""
        p = self.primary
        if (self.kernel_size, self.dilation) == (tuple(p.kernel_size), tuple(p.dilation)):
            return tuple(tuple(range(k)) for k in p.kernel_size)
        if self.tf_same:  # the runtime padding differs per kernel: only A of the primary's own geometry merges
            return None
        pad = numeric_padding(ConvGeometry(p.stride, p.padding, p.dilation, p.groups), tuple(p.kernel_size))
        pad_a = numeric_padding(ConvGeometry(p.stride, self._padding, self.dilation, p.groups), self.kernel_size)
        taps = []
        for k, d, q, kq, dq, qa in zip(p.kernel_size, p.dilation, pad, self.kernel_size, self.dilation, pad_a):
            offsets = [i * dq - qa + q for i in range(kq)]
            if any(o % d or not 0 <= o // d < k for o in offsets):
                return None
            taps.append(tuple(o // d for o in offsets))
        return tuple(taps)

    @property
    def mergeable(self) -> bool:
        """True when B(A(.)) is a layer of the primary's own shape: always for Linear; for a conv when every tap of
        A lies on a tap of the primary (A of the primary's kernel size and dilation, or a smaller / dilated A
        inside it; `_taps`)."""
        return isinstance(self.primary, nn.Linear) or self._taps() is not None

    def delta_weight(self) -> Tensor:
        """B A as a weight of the primary's shape (composed per group for a conv, A's taps placed on the primary's)."""
        if not self.mergeable:
            raise ValueError(
                f"cannot merge: the low-rank term's kernel {self.kernel_size} / dilation {self.dilation} reads pixels "
                f"that the primary's {tuple(self.primary.kernel_size)} / {tuple(self.primary.dilation)} does not"
            )
        a, b = self.lora_a.weight, self.lora_b.weight
        if isinstance(self.primary, nn.Linear):
            return b @ a
        g = self.primary.groups
        # per group j: B_j (out/g, r) @ A_j (r, in/g * kh * kw)
        delta = torch.bmm(b.reshape(g, -1, self.rank), a.reshape(g, self.rank, -1)).reshape(
            *self.primary.weight.shape[:2], *a.shape[-2:])
        if delta.shape == self.primary.weight.shape:
            return delta
        rows, cols = (torch.tensor(t, device=delta.device) for t in self._taps())
        full = delta.new_zeros(self.primary.weight.shape)
        full[:, :, rows[:, None], cols[None, :]] = delta
        return full

    @torch.no_grad()
    def merge(self) -> Union[nn.Conv2d, nn.Linear]:
        """A plain layer (a copy of the primary, same type) computing this adapter's output; raises ValueError
        where that is impossible (see `mergeable`). The adapter is not changed."""
        merged = copy.deepcopy(self.primary)
        if self.enabled:
            merged.weight.add_(self.delta_weight().to(merged.weight.dtype))
        return merged

    def extra_repr(self) -> str:
        return f"rank={self.rank}, kernel_size={self.kernel_size}, dilation={self.dilation}"
