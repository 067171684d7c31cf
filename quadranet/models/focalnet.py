"""FocalNet (focal modulation; Yang et al., "Focal Modulation Networks", NeurIPS 2022, arXiv 2203.11926) at the
sizes of the embedded task: timm's `FocalNet` class, registered as `focalnet_test` / `focalnet_atto`.

timm registers only the paper's sizes (focalnet_tiny_srf .. focalnet_xlarge_fl4), and their factories fix
`depths` and `embed_dim` (passing either again is a TypeError), so the small sizes are registered here on the
class itself. FocalNet doubles its width at each stage: `focalnet_atto` has exactly convnext_atto's widths and
depths; `focalnet_test` has test_convnext's depths and its last width (8-16-32-64 for 24-32-48-64). Both use
the paper's small receptive field (srf: 2 focal levels, first window 3, timm's defaults).
"""
from __future__ import annotations

from timm.models.focalnet import FocalNet

from .build import imagenet_cfg, register_sizes, without_timm_keys

__all__ = ["FOCALNET_CONFIGS", "focalnet"]

FOCALNET_CONFIGS = {
    "test": dict(embed_dim=8, depths=(1, 2, 4, 2)),  # timm test_convnext's depths, last width 64
    "atto": dict(embed_dim=40, depths=(2, 2, 6, 2)),  # timm convnext_atto's widths and depths
}


def focalnet(size: str, **kwargs) -> FocalNet:
    """A small FocalNet; `kwargs` go to timm's FocalNet (num_classes, in_chans, drop_path_rate, ...)."""
    if size not in FOCALNET_CONFIGS:
        raise ValueError(f"FocalNet size {size!r} is unknown; expected one of {list(FOCALNET_CONFIGS)}")
    model = FocalNet(**{**FOCALNET_CONFIGS[size], **without_timm_keys(kwargs)})
    model.pretrained_cfg = imagenet_cfg(f"focalnet_{size}", model, crop_pct=0.9)
    return model


register_sizes("focalnet", FOCALNET_CONFIGS, focalnet, "timm FocalNet (srf) {size}: {cfg}.", __name__, globals())
