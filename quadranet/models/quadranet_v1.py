"""QuadraNet V1 (Xu et al., arXiv 2311.17956) as the authors build it: `miniHuiHui/QuadraNet`, `QuadraNet.py`.

Macro design (their `QuadraNet` class): a 4x4 / stride-4 patch stem + LayerNorm, four stages with a
LayerNorm + 2x2 / stride-2 conv between them, global average pooling, LayerNorm and a linear head, every
conv and linear layer at trunc-normal(0.02) with zero bias. That is timm's ConvNeXt stem, downsampling and
head (`timm/models/convnext.py`, LayerNorm eps 1e-6), so the model is a timm `ConvNeXt` whose blocks are
theirs. Block (their `QuadraBlock1_dw`, used by every registered model), two residual branches:

    x = x + DropPath(gamma1 * Q(LN1(x))),   Q(x) = dw7x7_a(x) * dw7x7_b(x) + dw7x7_c(x)   (each with bias)
    x = x + DropPath(gamma2 * pwconv2(GELU(pwconv1(LN2(x)))))                             (4x expansion)

with layer scale gamma1 = gamma2 = 1e-6 at init. `QuadraBlock1_dw_fc` makes pwconv1 quadratic too:
fc_a(x) * fc_b(x) + fc_c(x) (their `QuadraFC`).

Sizes: the authors' registered models are `tiny36_dw` (`QuadraNet_tiny36_dw`: depths 3-3-27-3, widths 64 x
1-2-4-8), `tiny_dw_fc` (`QuadraNet_tiny_dw_fc`: the same with the quadratic pwconv1) and `base_dw36`
(`QuadraNet_base_dw36`: 3-3-27-3, 128 x 1-2-4-8). The other sizes are the same block on the depths and widths
of the first-order ConvNeXt each is compared with (ConvNeXt-T/S/B, Liu et al. arXiv 2201.03545; timm's
atto..nano and test_convnext/test_convnext2), so a V1 run and its first-order counterpart share a shape.
"""
from __future__ import annotations

import torch
from timm.layers import DropPath, LayerNorm, LayerNorm2d, trunc_normal_
from timm.models.convnext import ConvNeXt
from torch import Tensor, nn

from ..layers import QuadraticConv2d, QuadraticLinear
from .build import imagenet_cfg, register_sizes, without_timm_keys

__all__ = ["QUADRANET_V1_CONFIGS", "QuadraBlock", "quadranet_v1"]


def _widths(base: int) -> tuple:
    return (base, 2 * base, 4 * base, 8 * base)  # their `dims = [base_dim, base_dim*2, base_dim*4, base_dim*8]`


QUADRANET_V1_CONFIGS = {
    # the authors' registered models (QuadraNet.py)
    "tiny36_dw": dict(depths=(3, 3, 27, 3), dims=_widths(64)),
    "tiny_dw_fc": dict(depths=(3, 3, 27, 3), dims=_widths(64), quadratic_mlp=True),
    "base_dw36": dict(depths=(3, 3, 27, 3), dims=_widths(128)),
    # their block on the shapes of the first-order ConvNeXts the suite compares with
    "test": dict(depths=(1, 2, 4, 2), dims=(24, 32, 48, 64)),  # timm test_convnext
    "test2": dict(depths=(1, 1, 1, 1), dims=(32, 64, 96, 128)),  # timm test_convnext2
    "atto": dict(depths=(2, 2, 6, 2), dims=(40, 80, 160, 320)),  # timm convnext_atto
    "femto": dict(depths=(2, 2, 6, 2), dims=(48, 96, 192, 384)),  # timm convnext_femto
    "pico": dict(depths=(2, 2, 6, 2), dims=(64, 128, 256, 512)),  # timm convnext_pico
    "nano": dict(depths=(2, 2, 8, 2), dims=(80, 160, 320, 640)),  # timm convnext_nano
    "tiny": dict(depths=(3, 3, 9, 3), dims=(96, 192, 384, 768)),  # ConvNeXt-T
    "small": dict(depths=(3, 3, 27, 3), dims=(96, 192, 384, 768)),  # ConvNeXt-S
    "base": dict(depths=(3, 3, 27, 3), dims=(128, 256, 512, 1024)),  # ConvNeXt-B
}


class QuadraBlock(nn.Module):
    """The authors' `QuadraBlock1_dw` (`quadratic_mlp=True`: `QuadraBlock1_dw_fc`); NCHW in and out."""

    def __init__(self, dim: int, drop_path: float = 0.0, ls_init_value: float = 1e-6, kernel_size: int = 7,
                 quadratic_mlp: bool = False, mlp_ratio: int = 4, kernel: str = "bilinear",
                 memory_efficient: bool = False):
        super().__init__()
        self.norm1 = LayerNorm2d(dim, eps=1e-6)
        self.conv_dw = QuadraticConv2d(dim, dim, kernel_size, padding=(kernel_size - 1) // 2, groups=dim,
                                       kernel=kernel, memory_efficient=memory_efficient)
        self.gamma1 = nn.Parameter(ls_init_value * torch.ones(dim))
        self.norm2 = LayerNorm(dim, eps=1e-6)  # channels-last, as theirs
        hidden = mlp_ratio * dim
        self.pwconv1 = (QuadraticLinear(dim, hidden, kernel=kernel, memory_efficient=memory_efficient)
                        if quadratic_mlp else nn.Linear(dim, hidden))
        self.act = nn.GELU()
        self.pwconv2 = nn.Linear(hidden, dim)
        self.gamma2 = nn.Parameter(ls_init_value * torch.ones(dim))
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.drop_path(self.gamma1.view(-1, 1, 1) * self.conv_dw(self.norm1(x)))
        y = self.pwconv2(self.act(self.pwconv1(self.norm2(x.permute(0, 2, 3, 1)))))
        return x + self.drop_path((self.gamma2 * y).permute(0, 3, 1, 2))


def _init_weights(m: nn.Module) -> None:
    """Their `_init_weights` (uniform_init=False): trunc-normal(0.02) conv / linear weights, zero biases."""
    if isinstance(m, (nn.Conv2d, nn.Linear)):
        trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)


def quadranet_v1(size: str, memory_efficient: bool = False, kernel: str = "bilinear", ls_init_value: float = 1e-6,
                 drop_path_rate: float = 0.0, **kwargs) -> ConvNeXt:
    """A QuadraNet V1 model of the given size; `kwargs` go to timm's ConvNeXt (num_classes, in_chans, ...)."""
    if size not in QUADRANET_V1_CONFIGS:
        raise ValueError(f"QuadraNet V1 size {size!r} is unknown; expected one of {list(QUADRANET_V1_CONFIGS)}")
    cfg = dict(QUADRANET_V1_CONFIGS[size])
    depths, dims, quadratic_mlp = cfg.pop("depths"), cfg.pop("dims"), cfg.pop("quadratic_mlp", False)
    # timm builds the stem, the downsampling layers and the head; the stages get the authors' blocks
    model = ConvNeXt(depths=(0, 0, 0, 0), dims=dims, **cfg, **without_timm_keys(kwargs))
    n = sum(depths)  # their per-block drop-path schedule, linspace(0, drop_path_rate, n)
    rates = [drop_path_rate * i / max(n - 1, 1) for i in range(n)]
    for stage, dim, depth in zip(model.stages, dims, depths):
        stage.blocks = nn.Sequential(*[
            QuadraBlock(dim, rates.pop(0), ls_init_value, quadratic_mlp=quadratic_mlp, kernel=kernel,
                        memory_efficient=memory_efficient) for _ in range(depth)])
        stage.blocks.apply(_init_weights)
    model.pretrained_cfg = imagenet_cfg(f"quadranet_v1_{size}", model)
    return model


register_sizes("quadranet_v1", QUADRANET_V1_CONFIGS, quadranet_v1,
               "QuadraNet V1 {size}: {cfg} (miniHuiHui/QuadraNet, QuadraNet.py).", __name__, globals())
