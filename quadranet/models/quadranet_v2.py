"""`quadranet_v2_<backbone>`: a first-order timm model, quadratized (QuadraNet V2, arXiv 2405.03192).

With `pretrained=True` the primary terms hold the real offline weights of `quadranet.pretrained`. A backbone
that has such weights is always built in their architecture (e.g. efficientnet_lite0 -> timm
tf_efficientnet_lite0, TF 'SAME' padding), with or without them, so scratch and adaptation runs compare
the same network.
Quadratization options (rank, dilation, kernel_size, kernel, targets, memory_efficient,
freeze_primary) are taken from the keyword arguments; the rest go to `timm.create_model`.
"""
from __future__ import annotations

import timm
from timm.models import register_model

from ..convert import quadratize

__all__ = ["V2_BACKBONES", "quadranet_v2"]

# Backbones registered as quadranet_v2_<name>; any other timm name works through quadranet_v2().
V2_BACKBONES = (
    "convnext_atto", "convnext_femto", "convnext_pico", "convnext_nano", "convnext_tiny", "convnext_small",
    "convnext_base", "resnet18", "resnet50", "efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2",
)
_QUAD_KEYS = ("rank", "dilation", "kernel_size", "kernel", "targets", "memory_efficient", "freeze_primary")


def quadranet_v2(backbone: str, pretrained: bool = False, **kwargs):
    """Build timm `backbone` (with offline pretrained weights if asked) and quadratize it."""
    quad = {k: kwargs.pop(k) for k in _QUAD_KEYS if k in kwargs}
    for k in ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir"):
        kwargs.pop(k, None)
    if pretrained:
        from .pretrained import pretrained as load_pretrained

        model = load_pretrained(backbone, **kwargs)
    else:
        from .pretrained import PRETRAINED

        arch = PRETRAINED[backbone].arch if backbone in PRETRAINED else backbone
        model = timm.create_model(arch, pretrained=False, **kwargs)
    return quadratize(model, **quad)


def _register(backbone: str) -> None:
    def factory(pretrained: bool = False, **kwargs):
        return quadranet_v2(backbone, pretrained=pretrained, **kwargs)

    factory.__name__ = factory.__qualname__ = f"quadranet_v2_{backbone}"
    factory.__module__ = __name__
    factory.__doc__ = f"timm {backbone}, quadratized."
    globals()[factory.__name__] = factory
    register_model(factory)


for _backbone in V2_BACKBONES:
    _register(_backbone)
