"""QuadraNet V1: ConvNeXt-style networks whose 7x7 depthwise conv is the quadratic neuron
dw_a(x) * dw_b(x) + dw_c(x) (Xu et al., arXiv 2311.17956). This is the high-order architecture that
the suite trains from scratch.

Depths and widths: the V1 paper's exact configurations were not readable to us, so every size follows
the ConvNeXt macro design it builds on: tiny/small/base from ConvNeXt (Liu et al., arXiv 2201.03545,
Table 9), atto/femto/pico/nano from timm's small ConvNeXt variants (`timm/models/convnext.py`).
"""
from __future__ import annotations

from torch import nn
from timm.layers import trunc_normal_
from timm.models.convnext import ConvNeXt

from ..layers import QuadraticConv2d
from .build import register_family

__all__ = ["QUADRANET_V1_CONFIGS", "quadranet_v1"]

QUADRANET_V1_CONFIGS = {
    "test": dict(depths=(1, 2, 4, 2), dims=(24, 32, 48, 64), act_layer="gelu_tanh"),  # timm test_convnext
    "test2": dict(depths=(1, 1, 1, 1), dims=(32, 64, 96, 128), act_layer="gelu_tanh"),  # timm test_convnext2
    "atto": dict(depths=(2, 2, 6, 2), dims=(40, 80, 160, 320)),  # timm convnext_atto
    "femto": dict(depths=(2, 2, 6, 2), dims=(48, 96, 192, 384)),  # timm convnext_femto
    "pico": dict(depths=(2, 2, 6, 2), dims=(64, 128, 256, 512)),  # timm convnext_pico
    "nano": dict(depths=(2, 2, 8, 2), dims=(80, 160, 320, 640)),  # timm convnext_nano
    "tiny": dict(depths=(3, 3, 9, 3), dims=(96, 192, 384, 768)),  # ConvNeXt-T
    "small": dict(depths=(3, 3, 27, 3), dims=(96, 192, 384, 768)),  # ConvNeXt-S
    "base": dict(depths=(3, 3, 27, 3), dims=(128, 256, 512, 1024)),  # ConvNeXt-B
}


def quadranet_v1(size: str, memory_efficient: bool = False, kernel: str = "bilinear", **kwargs) -> ConvNeXt:
    """A QuadraNet V1 model of the given size; `kwargs` go to timm's ConvNeXt (num_classes, in_chans, ...)."""
    if size not in QUADRANET_V1_CONFIGS:
        raise ValueError(f"QuadraNet V1 size {size!r} is unknown; expected one of {list(QUADRANET_V1_CONFIGS)}")
    for k in ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir"):
        kwargs.pop(k, None)
    model = ConvNeXt(**QUADRANET_V1_CONFIGS[size], **kwargs)
    for stage in model.stages:
        for block in stage.blocks:
            dw = block.conv_dw
            q = QuadraticConv2d(dw.in_channels, dw.out_channels, dw.kernel_size, dw.stride, dw.padding,
                                dw.dilation, dw.groups, bias=dw.bias is not None, kernel=kernel,
                                memory_efficient=memory_efficient)
            for conv in (q.conv_a, q.conv_b, q.conv_c):  # ConvNeXt's own init (timm `_init_weights`)
                trunc_normal_(conv.weight, std=0.02)
                if conv.bias is not None:
                    nn.init.zeros_(conv.bias)
            block.conv_dw = q
    model.pretrained_cfg = dict(architecture=f"quadranet_v1_{size}", input_size=(3, 224, 224),
                                mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225),
                                num_classes=model.num_classes, interpolation="bicubic", crop_pct=0.875)
    return model


def _v1_factory(size: str):
    def build(pretrained: bool = False, **kwargs):
        if pretrained:
            raise ValueError(f"quadranet_v1_{size} has no pretrained weights: it is trained from scratch here")
        return quadranet_v1(size, **kwargs)
    return build


for _size in QUADRANET_V1_CONFIGS:
    register_family(f"quadranet_v1_{_size}", _v1_factory(_size),
                    f"QuadraNet V1 {_size}: {QUADRANET_V1_CONFIGS[_size]}.", __name__, globals())
