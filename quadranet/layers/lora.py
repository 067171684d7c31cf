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
from timm.layers import Conv2dSame
from timm.layers.padding import pad_same
from torch import Tensor, nn

from .adapter import _pair, atrous_padding, is_supported
from .grouped import ConvGeometry, fast_cpu, grouped_conv, grouped_pointwise


class LowRankAdapter(nn.Module):
    """Wraps a first-order `nn.Conv2d` or `nn.Linear` (the primary term) and adds a rank-r linear term."""

    def __init__(
        self,
        primary: Union[nn.Conv2d, nn.Linear],
        rank: int = 4,
        kernel_size: Optional[int] = None,
        dilation: Optional[int] = 1,
        freeze_primary: bool = False,
        name: str = "",
    ):
        super().__init__()
        if isinstance(rank, bool) or not isinstance(rank, int) or rank <= 0:
            raise ValueError(f"rank={rank!r} must be a positive integer")
        if not is_supported(primary):
            raise TypeError(
                f"layer {name!r} is a {type(primary).__name__}; expected a torch.nn.Conv2d (zero padding, no "
                f"forward override, or timm's Conv2dSame) or torch.nn.Linear"
            )
        self.primary, self.rank = primary, rank
        self.enabled = True  # False bypasses the low-rank term
        dev, dtype = primary.weight.device, primary.weight.dtype
        if isinstance(primary, nn.Conv2d):
            ks = _pair(primary.kernel_size[0] if kernel_size is None else kernel_size)
            dil = _pair(primary.dilation[0] if dilation is None else dilation)
            if any(k < 1 for k in ks) or any(d < 1 for d in dil):
                raise ValueError(f"kernel_size={kernel_size!r} and dilation={dilation!r} must be >= 1")
            self.tf_same = isinstance(primary, Conv2dSame)  # pads at run time for A's own kernel (see adapter.py)
            padding = (0, 0) if self.tf_same else atrous_padding(primary, ks, dil, name)
            g = primary.groups
            self.lora_a = nn.Conv2d(primary.in_channels, g * rank, ks, primary.stride, padding, dil, g, bias=False,
                                    device=dev, dtype=dtype)
            self.lora_b = nn.Conv2d(g * rank, primary.out_channels, 1, groups=g, bias=False, device=dev, dtype=dtype)
            self.kernel_size, self.dilation = ks, dil
        else:  # kernel_size and dilation apply to convs only, as in QuadraticAdapter
            self.lora_a = nn.Linear(primary.in_features, rank, bias=False, device=dev, dtype=dtype)
            self.lora_b = nn.Linear(rank, primary.out_features, bias=False, device=dev, dtype=dtype)
            self.kernel_size = self.dilation = None
            self.tf_same = False
        nn.init.zeros_(self.lora_b.weight)
        if freeze_primary:
            primary.requires_grad_(False)

    def low_rank(self, x: Tensor) -> Tensor:
        """The low-rank term alone, B(A(x))."""
        if self.tf_same:
            x = pad_same(x, self.kernel_size, self.lora_a.stride, self.dilation)
        a, b = self.lora_a, self.lora_b
        if isinstance(a, nn.Linear):
            return b(a(x))
        h = grouped_conv(x, a.weight, None, ConvGeometry(a.stride, a.padding, a.dilation, a.groups))
        return grouped_pointwise(h, b.weight, b.groups)

    def forward(self, x: Tensor) -> Tensor:
        if not self.enabled:
            return self.primary(x)
        if self.mergeable and fast_cpu(x):  # one layer with weight W + B A: B A costs a weight-sized product
            return self._merged_forward(x)
        y = self.primary(x)
        d = self.low_rank(x)
        if d.shape != y.shape:
            raise RuntimeError(f"low-rank term has shape {tuple(d.shape)} but the primary output {tuple(y.shape)}")
        return y + d

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

    @property
    def mergeable(self) -> bool:
        """True when B(A(.)) is a layer of the primary's own shape: always for Linear; for a conv when A has
        the primary's kernel size and dilation (then also its padding)."""
        p = self.primary
        if isinstance(p, nn.Linear):
            return True
        return (self.kernel_size, self.dilation) == (tuple(p.kernel_size), tuple(p.dilation))

    def delta_weight(self) -> Tensor:
        """B A as a weight of the primary's shape (composed per group for a conv)."""
        if not self.mergeable:
            raise ValueError(
                f"cannot merge: the low-rank term's kernel {self.kernel_size} / dilation {self.dilation} differ from "
                f"the primary's {tuple(self.primary.kernel_size)} / {tuple(self.primary.dilation)}"
            )
        a, b = self.lora_a.weight, self.lora_b.weight
        if isinstance(self.primary, nn.Linear):
            return b @ a
        g = self.primary.groups
        # per group j: B_j (out/g, r) @ A_j (r, in/g * kh * kw)
        delta = torch.bmm(b.reshape(g, -1, self.rank), a.reshape(g, self.rank, -1))
        return delta.reshape(self.primary.weight.shape)

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
