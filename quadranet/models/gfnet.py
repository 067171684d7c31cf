"""GFNet (Rao et al., "Global Filter Networks for Image Classification", NeurIPS 2021, arXiv 2107.00645), written
from the paper and checked against the authors' `raoyongming/GFNet` (`gfnet.py`, `main_gfnet.py`).

Global filter layer, as the paper defines it, on channels-last tokens x of an H x W grid:

    y = IFFT2(K * FFT2(x))     (2D real FFTs over the grid, orthonormal; K: a learnable complex filter of
                                H x (W/2 + 1) x C, one per channel, so a global circular convolution)

Block (their `Block`; `BlockLayerScale` with a layer scale gamma), one residual branch:

    x = x + DropPath(gamma * MLP(LN2(GlobalFilter(LN1(x)))))     (MLP: Linear, GELU, Linear, 4x expansion)

Macro design: a patch-embedding conv (stride = patch size) plus a learned position embedding, then the blocks,
a final LayerNorm, average pooling over tokens and a linear head. The isotropic GFNet (GFNet-Ti: one stage of
12 blocks at width 256, 16 x 16 patches) is one stage; the hierarchical GFNet-H (their `GFNetPyramid`) has four,
joined by 2 x 2 / stride-2 convs, on 4 x 4 patches. The filters are sized from `img_size` (the token grid of
each stage); at another input size the filters and the position embedding are resampled bilinearly, as the
HorNet authors resample theirs.

Sizes: the paper's GFNet-Ti (`gfnet_ti`) and GFNet-H-Ti (`gfnet_h_ti`); for the embedded task (32 px) the
hierarchical design on the widths and depths of timm's test_convnext / convnext_atto (`gfnet_test`,
`gfnet_atto`; token grids 8-4-2-1 on 4 x 4 patches, as those ConvNeXts' feature maps), so each is compared with
a first-order network of the same shape and cost. An isotropic GFNet at those parameter counts keeps all of its
tokens at full width in every block and costs several times their FLOPs.

FLOPs: torch's FlopCounterMode counts no FFT; `quadranet.convert.count_flops` adds them by the authors' rule
(`convert.measure.FFT_FLOP_FORMULAS`).
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from timm.layers import DropPath, Mlp
from torch import Tensor, nn

from .build import imagenet_cfg, register_sizes, without_timm_keys

__all__ = ["GFNET_CONFIGS", "GFNET_PUBLISHED", "GFNet", "GFNetBlock", "GlobalFilter", "gfnet",
           "resample_grid"]

GFNET_CONFIGS = {
    # the paper's (their main_gfnet.py: gfnet-ti, gfnet-h-ti)
    "ti": dict(dims=(256,), depths=(12,), patch_size=16, img_size=224),
    "h_ti": dict(dims=(64, 128, 256, 512), depths=(3, 3, 10, 3), patch_size=4, img_size=224, ls_init_value=1e-3),
    # the hierarchical design on the shapes of the first-order ConvNeXts of the embedded task (32 px)
    "test": dict(dims=(24, 32, 48, 64), depths=(1, 2, 4, 2), patch_size=4, img_size=32,
                 ls_init_value=1e-3),  # timm test_convnext
    "atto": dict(dims=(40, 80, 160, 320), depths=(2, 2, 6, 2), patch_size=4, img_size=32,
                 ls_init_value=1e-3),  # timm convnext_atto
}

# ImageNet-1K at 224 px, as published: parameters (millions), FLOPs (G, multiply-adds), top-1 (%)
GFNET_PUBLISHED = {
    "ti": dict(params_m=7, gflops=1.3, top1=74.6,
               source="arXiv 2107.00645, ImageNet-1K results; raoyongming/GFNet README model zoo"),
    "h_ti": dict(params_m=15, gflops=2.0, top1=80.1,
                 source="arXiv 2107.00645, ImageNet-1K results; raoyongming/GFNet README model zoo"),
}


def resample_grid(t: Tensor, size: Sequence[int]) -> Tensor:
    """`t` of shape (h, w, ...) resampled bilinearly (corners aligned, as the authors) to (size[0], size[1], ...)."""
    h, w, *rest = t.shape
    if (h, w) == tuple(size):
        return t
    t = t.reshape(h, w, -1).permute(2, 0, 1).unsqueeze(0)
    t = F.interpolate(t, size=tuple(size), mode="bilinear", align_corners=True)
    return t[0].permute(1, 2, 0).reshape(*size, *rest)


class GlobalFilter(nn.Module):
    """Global filter layer on channels-last (B, H, W, C) tokens: irfft2(K * rfft2(x)), orthonormal FFTs.

    `grid` is the (H, W) the filter is sized for; K holds H x (W // 2 + 1) complex values per channel (the
    half-spectrum of a real signal), stored as real and imaginary parts.
    """

    def __init__(self, dim: int, grid: Sequence[int]):
        super().__init__()
        h, w = grid
        if h < 1 or w < 1:
            raise ValueError(f"GlobalFilter grid={tuple(grid)}: expected a token grid of at least 1 x 1")
        self.complex_weight = nn.Parameter(torch.empty(h, w // 2 + 1, dim, 2))
        nn.init.trunc_normal_(self.complex_weight, std=0.02)

    def forward(self, x: Tensor) -> Tensor:
        _, h, w, _ = x.shape
        # FFTs take float32 or float64: half precision (autocast) is computed in float32, as the authors do
        x = torch.fft.rfft2(x.to(torch.promote_types(x.dtype, torch.float32)), dim=(1, 2), norm="ortho")
        weight = resample_grid(self.complex_weight, x.shape[1:3]).to(x.real.dtype)
        x = x * torch.view_as_complex(weight.contiguous())
        return torch.fft.irfft2(x, s=(h, w), dim=(1, 2), norm="ortho")


class GFNetBlock(nn.Module):
    """GFNet block on channels-last tokens: x + DropPath(gamma * MLP(LN(GlobalFilter(LN(x))))); gamma (layer
    scale) only where `ls_init_value` is given (GFNet-H; the isotropic GFNet has none)."""

    def __init__(self, dim: int, grid: Sequence[int], mlp_ratio: float = 4.0, drop_path: float = 0.0,
                 ls_init_value: Optional[float] = None):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.filter = GlobalFilter(dim, grid)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.gamma = nn.Parameter(ls_init_value * torch.ones(dim)) if ls_init_value else None
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        y = self.mlp(self.norm2(self.filter(self.norm1(x))))
        return x + self.drop_path(y if self.gamma is None else self.gamma * y)


class GFNetStage(nn.Module):
    """A 2 x 2 / stride-2 conv from width `in_dim` (none in the first stage: `in_dim=None`), then the blocks."""

    def __init__(self, in_dim: Optional[int], dim: int, grid: Sequence[int], rates: Sequence[float], **block_kwargs):
        super().__init__()
        self.downsample = None if in_dim is None else nn.Conv2d(in_dim, dim, kernel_size=2, stride=2)
        self.blocks = nn.Sequential(*[GFNetBlock(dim, grid, drop_path=r, **block_kwargs) for r in rates])

    def forward(self, x: Tensor) -> Tensor:
        if self.downsample is not None:
            x = self.downsample(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        return self.blocks(x)


class GFNet(nn.Module):
    """GFNet, isotropic (one stage) or hierarchical (four), with timm's classifier interface.

    `forward_features` returns the final-LayerNorm'd tokens (B, H, W, C); `forward_head` averages them and
    applies the linear head.
    """

    def __init__(self, dims: Sequence[int] = (256,), depths: Sequence[int] = (12,), patch_size: int = 16,
                 img_size: int = 224, in_chans: int = 3, num_classes: int = 1000, mlp_ratio: float = 4.0,
                 ls_init_value: Optional[float] = None, drop_rate: float = 0.0, drop_path_rate: float = 0.0,
                 global_pool: str = "avg"):
        super().__init__()
        if len(dims) != len(depths) or not dims:
            raise ValueError(f"GFNet dims={tuple(dims)} and depths={tuple(depths)}: expected one width and one "
                             f"depth per stage")
        grid = img_size // patch_size
        if grid < 2 ** (len(dims) - 1):
            raise ValueError(f"GFNet img_size={img_size}, patch_size={patch_size}: a {grid} x {grid} token grid, "
                             f"expected at least {2 ** (len(dims) - 1)} per side for {len(dims)} stages")
        self._check_pool(global_pool)
        self.num_classes, self.global_pool, self.in_chans, self.img_size = num_classes, global_pool, in_chans, img_size
        self.num_features = self.head_hidden_size = dims[-1]
        self.stem = nn.Conv2d(in_chans, dims[0], kernel_size=patch_size, stride=patch_size)
        self.pos_embed = nn.Parameter(torch.zeros(grid, grid, dims[0]))
        n = sum(depths)  # per-block drop-path rates, linspace(0, drop_path_rate, n), as theirs
        rates = [drop_path_rate * i / max(n - 1, 1) for i in range(n)]
        stages, start = [], 0
        for i, (dim, depth) in enumerate(zip(dims, depths)):
            g = grid // 2 ** i
            stages.append(GFNetStage(dims[i - 1] if i else None, dim, (g, g), rates[start:start + depth],
                                     mlp_ratio=mlp_ratio, ls_init_value=ls_init_value))
            start += depth
        self.stages = nn.Sequential(*stages)
        self.norm = nn.LayerNorm(dims[-1], eps=1e-6)
        self.head_drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(dims[-1], num_classes) if num_classes > 0 else nn.Identity()
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        self.apply(_init_weights)

    @staticmethod
    def _check_pool(global_pool: str) -> None:
        if global_pool not in ("avg", ""):
            raise ValueError(f"GFNet global_pool={global_pool!r}: expected 'avg' or '' (no pooling)")

    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        if global_pool is not None:
            self._check_pool(global_pool)
            self.global_pool = global_pool
        self.num_classes = num_classes
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    def forward_features(self, x: Tensor) -> Tensor:
        x = self.stem(x).permute(0, 2, 3, 1)
        x = x + resample_grid(self.pos_embed, x.shape[1:3])
        return self.norm(self.stages(x))

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        if self.global_pool == "avg":
            x = x.mean(dim=(1, 2))
        x = self.head_drop(x)
        return x if pre_logits else self.head(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))


def _init_weights(m: nn.Module) -> None:
    """Their `_init_weights`: trunc-normal(0.02) linear weights, zero biases, LayerNorm at identity (convs keep
    PyTorch's default init, as theirs)."""
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)


def gfnet(size: str, **kwargs) -> GFNet:
    """A GFNet of the given size; `kwargs` (num_classes, in_chans, img_size, drop_path_rate, ...) override it."""
    if size not in GFNET_CONFIGS:
        raise ValueError(f"GFNet size {size!r} is unknown; expected one of {list(GFNET_CONFIGS)}")
    model = GFNet(**{**GFNET_CONFIGS[size], **without_timm_keys(kwargs)})
    model.pretrained_cfg = imagenet_cfg(f"gfnet_{size}", model, model.img_size, crop_pct=0.9)
    return model


register_sizes("gfnet", GFNET_CONFIGS, gfnet, "GFNet {size}: {cfg} (arXiv 2107.00645).", __name__, globals())
