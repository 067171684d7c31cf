"""QuadraNet V2 reproduction suite: turn pretrained first-order networks into quadratic ones and measure it.

Paper: Xu, Wang, Yu, Xiong, Chen, "QuadraNet V2: Efficient and Sustainable Training of High-Order Neural
Networks with Quadratic Adaptation", arXiv 2405.03192 (WACV 2026).
"""
from .convert import (
    conversion_report,
    load_first_order_state_dict,
    lora_adapt,
    mark_only_quadratic_trainable,
    matched_lora_rank,
    merge_lora,
    quadratic_adapters,
    quadratic_disabled,
    quadratic_parameters,
    quadratize,
    unlora,
    unquadratize,
)
from .layers import LowRankAdapter, QuadraticAdapter, QuadraticConv2d, QuadraticLinear
from . import models  # noqa: F401  (registers the model families with timm)

__version__ = "0.1.0"

__all__ = [
    "LowRankAdapter", "QuadraticAdapter", "QuadraticConv2d", "QuadraticLinear", "conversion_report",
    "export", "load_first_order_state_dict", "lora_adapt", "matched_lora_rank", "merge_lora", "unlora",
    "mark_only_quadratic_trainable", "pretrained", "quadratic_adapters", "quadratic_disabled", "quadratic_parameters",
    "quadratize", "unquadratize",
]


def pretrained(name: str, **kwargs):
    """A timm model holding real pretrained first-order weights that can be had offline (see models.pretrained)."""
    from .models.pretrained import pretrained as _pretrained

    return _pretrained(name, **kwargs)


def export(model, out, format: str = "onnx", **kwargs):
    """Export `model` to ONNX or a torch.export archive, ready to deploy (see quadranet.deploy)."""
    from .deploy import export as _export

    return _export(model, out, format, **kwargs)
