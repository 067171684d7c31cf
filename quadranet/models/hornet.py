"""HorNet (Rao et al., "HorNet: Efficient High-Order Spatial Interactions with Recursive Gated Convolutions",
NeurIPS 2022, arXiv 2207.14284), written from the paper and checked against the authors' `raoyongming/HorNet`,
`hornet.py`.

Recursive gated convolution gnConv of order n on C channels, as the paper defines it, widths C_k = C / 2^(n-1-k):

    [p_0, q_0 .. q_{n-1}] = phi_in(x)                  1x1 conv, C -> C_0 + (C_0 + .. + C_{n-1}) = 2C
    p_1 = f_0(q) * p_0,  p_{k+1} = f_k(q) * g_k(p_k)     g_k: 1x1 conv C_{k-1} -> C_k
    y = phi_out(p_n)                                    1x1 conv, C -> C

f is one depthwise mixing layer over all the q channels together, scaled by s = 1/3 (their scale) and split
per order: a 7x7 depthwise conv with bias (HorNet 7x7), or the global-local filter (HorNet GF): LayerNorm, half
the channels through a 3x3 depthwise conv and half through a global filter (`gfnet.GlobalFilter`, sized from
the stage's feature map at `img_size`), interleaved channel by channel as theirs, LayerNorm.

Block (their `Block`), two residual branches with layer scale (1e-6 at init):

    x = x + DropPath(gamma1 * gnConv(LN(x)))
    x = x + DropPath(gamma2 * Linear(GELU(Linear(LN(x)))))     (4x expansion)

Macro design: ConvNeXt's (4x4 / stride-4 stem + LayerNorm, LayerNorm + 2x2 / stride-2 conv between the four
stages, average pooling, LayerNorm, linear head), orders 2-3-4-5 by stage. So, as QuadraNet V1, the model is a
timm `ConvNeXt` whose blocks are HorNet's.

Sizes: the paper's HorNet-T 7x7 and HorNet-T GF (base width 64, depths 2-3-18-2; GF in the last two stages);
and the 7x7 design on the widths and depths of timm's test_convnext and convnext_atto (`hornet_test`,
`hornet_atto`), the first-order networks of the embedded task. At its 32 px the third and fourth stages are
2 x 2 and 1 x 1, where a global filter mixes next to nothing, so the embedded sizes have no GF variant
(`timm.create_model("hornet_tiny_gf", img_size=...)` builds one at any size).
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
from timm.layers import DropPath, LayerNorm, LayerNorm2d
from timm.models.convnext import ConvNeXt
from torch import Tensor, nn

from .build import imagenet_cfg, register_sizes, without_timm_keys
from .gfnet import GlobalFilter

__all__ = ["HORNET_CONFIGS", "HORNET_PUBLISHED", "GlobalLocalFilter", "GnConv", "HorNetBlock", "hornet"]


def _widths(base: int) -> tuple:
    return (base, 2 * base, 4 * base, 8 * base)  # their `dims = [base_dim, base_dim*2, base_dim*4, base_dim*8]`


HORNET_CONFIGS = {
    # the paper's (their hornet_tiny_7x7, hornet_tiny_gf)
    "tiny_7x7": dict(depths=(2, 3, 18, 2), dims=_widths(64)),
    "tiny_gf": dict(depths=(2, 3, 18, 2), dims=_widths(64), global_filter=(False, False, True, True)),
    # the 7x7 design on the shapes of the first-order ConvNeXts of the embedded task
    "test": dict(depths=(1, 2, 4, 2), dims=(24, 32, 48, 64)),  # timm test_convnext
    "atto": dict(depths=(2, 2, 6, 2), dims=(40, 80, 160, 320)),  # timm convnext_atto
}
ORDERS = (2, 3, 4, 5)  # gnConv order by stage, in every size

# ImageNet-1K at 224 px, as published: parameters (millions), FLOPs (G, multiply-adds as the authors count them
# with fvcore), top-1 (%)
HORNET_PUBLISHED = {
    "tiny_7x7": dict(params_m=22, gflops=4.0, top1=82.8,
                     source="arXiv 2207.14284, ImageNet-1K results table; raoyongming/HorNet README model zoo"),
    "tiny_gf": dict(params_m=23, gflops=3.9, top1=83.0,
                    source="arXiv 2207.14284, ImageNet-1K results table; raoyongming/HorNet README model zoo"),
}


class GlobalLocalFilter(nn.Module):
    """The paper's GF layer (their `GlobalLocalFilter`) on NCHW: LN, a 3x3 depthwise conv on the first half of
    the channels and a global filter on the second, interleaved, LN."""

    def __init__(self, dim: int, grid: Sequence[int]):
        super().__init__()
        if dim % 2:
            raise ValueError(f"GlobalLocalFilter dim={dim}: expected an even width (half local, half global)")
        half = dim // 2
        self.pre_norm = LayerNorm2d(dim, eps=1e-6)
        self.dw = nn.Conv2d(half, half, kernel_size=3, padding=1, groups=half, bias=False)
        self.filter = GlobalFilter(half, grid)
        self.post_norm = LayerNorm2d(dim, eps=1e-6)

    def forward(self, x: Tensor) -> Tensor:
        local, glob = self.pre_norm(x).chunk(2, dim=1)
        glob = self.filter(glob.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        # channel 2i is local channel i, 2i+1 global channel i: the split into orders sees both kinds
        x = torch.stack((self.dw(local), glob.to(local.dtype)), dim=2).flatten(1, 2)
        return self.post_norm(x)


class GnConv(nn.Module):
    """Recursive gated convolution of order `order` on NCHW (their `gnconv`); `grid` given: the GF variant with
    its filter sized for that feature map, else the 7x7 depthwise one."""

    def __init__(self, dim: int, order: int, grid: Optional[Sequence[int]] = None, scale: float = 1.0 / 3.0):
        super().__init__()
        if order < 1 or dim % 2 ** (order - 1):
            raise ValueError(f"gnConv of order={order} on dim={dim}: expected order >= 1 and a width divisible by "
                             f"2^(order-1) = {2 ** max(order - 1, 0)}")
        self.order, self.scale = order, scale
        self.dims = [dim // 2 ** (order - 1 - k) for k in range(order)]  # C_0 .. C_{n-1} = C
        self.proj_in = nn.Conv2d(dim, 2 * dim, 1)
        q = sum(self.dims)
        self.dwconv = (GlobalLocalFilter(q, grid) if grid is not None
                       else nn.Conv2d(q, q, kernel_size=7, padding=3, groups=q))
        self.pws = nn.ModuleList(nn.Conv2d(self.dims[k], self.dims[k + 1], 1) for k in range(order - 1))
        self.proj_out = nn.Conv2d(dim, dim, 1)

    def forward(self, x: Tensor) -> Tensor:
        p, q = torch.split(self.proj_in(x), (self.dims[0], sum(self.dims)), dim=1)
        gates = torch.split(self.dwconv(q) * self.scale, self.dims, dim=1)
        p = p * gates[0]
        for g, gate in zip(self.pws, gates[1:]):
            p = g(p) * gate
        return self.proj_out(p)


class HorNetBlock(nn.Module):
    """HorNet block on NCHW: gnConv and MLP branches, each with LayerNorm, layer scale and drop path."""

    def __init__(self, dim: int, order: int, grid: Optional[Sequence[int]] = None, drop_path: float = 0.0,
                 ls_init_value: float = 1e-6, mlp_ratio: int = 4):
        super().__init__()
        self.norm1 = LayerNorm2d(dim, eps=1e-6)
        self.gnconv = GnConv(dim, order, grid)
        self.gamma1 = nn.Parameter(ls_init_value * torch.ones(dim))
        self.norm2 = LayerNorm(dim, eps=1e-6)  # channels-last, as theirs
        self.pwconv1 = nn.Linear(dim, mlp_ratio * dim)
        self.act = nn.GELU()
        self.pwconv2 = nn.Linear(mlp_ratio * dim, dim)
        self.gamma2 = nn.Parameter(ls_init_value * torch.ones(dim))
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.drop_path(self.gamma1.view(-1, 1, 1) * self.gnconv(self.norm1(x)))
        y = self.pwconv2(self.act(self.pwconv1(self.norm2(x.permute(0, 2, 3, 1)))))
        return x + self.drop_path((self.gamma2 * y).permute(0, 3, 1, 2))


def _init_weights(m: nn.Module) -> None:
    """Their `_init_weights` (uniform_init=False): trunc-normal(0.02) conv / linear weights, zero biases. Torch's
    trunc_normal_, as the HorNet authors call it; V1's uses timm's, which draws other numbers from the same seed."""
    if isinstance(m, (nn.Conv2d, nn.Linear)):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)


def hornet(size: str, img_size: int = 224, ls_init_value: float = 1e-6, drop_path_rate: float = 0.0,
           **kwargs) -> ConvNeXt:
    """A HorNet of the given size; `img_size` sizes the GF filters; `kwargs` go to timm's ConvNeXt (num_classes,
    in_chans, ...)."""
    if size not in HORNET_CONFIGS:
        raise ValueError(f"HorNet size {size!r} is unknown; expected one of {list(HORNET_CONFIGS)}")
    cfg = HORNET_CONFIGS[size]
    depths, dims = cfg["depths"], cfg["dims"]
    global_filter = cfg.get("global_filter", (False,) * 4)
    # timm builds the stem, the downsampling layers and the head; the stages get HorNet's blocks
    model = ConvNeXt(depths=(0, 0, 0, 0), dims=dims, **without_timm_keys(kwargs))
    n = sum(depths)  # their per-block drop-path schedule, linspace(0, drop_path_rate, n)
    rates = [drop_path_rate * i / max(n - 1, 1) for i in range(n)]
    for i, (stage, dim, depth, order, gf) in enumerate(zip(model.stages, dims, depths, ORDERS, global_filter)):
        grid = (img_size // 2 ** (i + 2),) * 2 if gf else None  # the stage's feature map: stride 4, 8, 16, 32
        stage.blocks = nn.Sequential(*[HorNetBlock(dim, order, grid, rates.pop(0), ls_init_value)
                                       for _ in range(depth)])
        stage.blocks.apply(_init_weights)
    model.pretrained_cfg = imagenet_cfg(f"hornet_{size}", model, img_size)
    return model


register_sizes("hornet", HORNET_CONFIGS, hornet, "HorNet {size}: {cfg} (arXiv 2207.14284).", __name__, globals())
