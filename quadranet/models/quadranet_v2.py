"""`quadranet_v2_<backbone>`: a first-order timm model, quadratized (QuadraNet V2, arXiv 2405.03192).

With `pretrained=True` the primary terms hold the real offline weights of `quadranet.pretrained`. A backbone
that has such weights is always built in their architecture (e.g. efficientnet_lite0 -> timm
tf_efficientnet_lite0, TF 'SAME' padding), with or without them, so scratch and adaptation runs compare
the same network.
Quadratization options (rank, dilation, kernel_size, kernel, sigma, targets, memory_efficient,
freeze_primary) are taken from the keyword arguments; the rest go to `timm.create_model`.
"""
from __future__ import annotations

from ..convert import quadratize
from .build import QUADRATIZE_KEYS, create_model, register_family

__all__ = ["V2_BACKBONES", "quadranet_v2"]

# Backbones registered as quadranet_v2_<name>; any other timm name works through quadranet_v2().
V2_BACKBONES = (
    "convnext_atto", "convnext_femto", "convnext_pico", "convnext_nano", "convnext_tiny", "convnext_small",
    "convnext_base", "resnet18", "resnet50", "efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2",
)


def quadranet_v2(backbone: str, pretrained: bool = False, **kwargs):
    """Build timm `backbone` (with offline pretrained weights if asked) and quadratize it."""
    quad = {k: kwargs.pop(k) for k in (*QUADRATIZE_KEYS, "freeze_primary") if k in kwargs}
    for k in ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir"):
        kwargs.pop(k, None)
    if pretrained:
        from .pretrained import pretrained as load_pretrained

        model = load_pretrained(backbone, **kwargs)
    else:
        model = create_model(backbone, key="backbone", **kwargs)
    return quadratize(model, **quad)


for _backbone in V2_BACKBONES:
    register_family(f"quadranet_v2_{_backbone}", lambda pretrained=False, _b=_backbone, **kw: quadranet_v2(
        _b, pretrained=pretrained, **kw), f"timm {_backbone}, quadratized.", __name__, globals())
