"""Building models by name: architecture names, weights files and the quadratize options, in one place.

Classification (`quadranet.classify.build`), detection backbones (`quadranet.detection.models`) and the
`quadranet_v2_*` timm entries all build through these, so a backbone name means the same network everywhere.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import timm
from timm.models import register_model
from torch import nn

from ..config import ConfigError
from ..run.checkpoint import WEIGHTS
from .pretrained import PRETRAINED

__all__ = ["QUADRATIZE_KEYS", "WEIGHTS", "create_model", "imagenet_cfg", "quadratize_options", "register_family",
           "register_sizes", "resolve_arch", "without_timm_keys",
           "weights_file"]

# keyword arguments of `quadranet.quadratize` that a config's `adapter` section sets
QUADRATIZE_KEYS = ("rank", "dilation", "kernel_size", "kernel", "sigma", "targets", "memory_efficient")


def resolve_arch(name: str) -> str:
    """The timm architecture of `name`; names with offline weights map to the weights' architecture
    (efficientnet_lite0 -> tf_efficientnet_lite0), so scratch and adapted runs of a backbone train the same network."""
    return PRETRAINED[name].arch if name in PRETRAINED else name


def create_model(name: str, key: str = "model.arch", **kwargs) -> nn.Module:
    """timm model `name` (through `resolve_arch`) at random init; ConfigError naming config key `key` if unknown."""
    try:
        return timm.create_model(resolve_arch(name), pretrained=kwargs.pop("pretrained", False), **kwargs)
    except RuntimeError as e:
        if "Unknown model" in str(e):
            raise ConfigError(f"{key}={name!r} is not a timm model; e.g. efficientnet_lite0, convnext_atto, "
                              f"resnet18, quadranet_v1_tiny (timm.list_models() lists them)") from None
        raise


def weights_file(source: str, expected: str = "'none', 'offline' or the --out folder of a finished first-order "
                                              "run") -> Path:
    """model.pretrained as a file: a .safetensors file, or a run folder holding model.safetensors."""
    path = Path(source)
    path = path / WEIGHTS if path.is_dir() else path
    if not path.is_file():
        raise ConfigError(f"model.pretrained={source!r}: no such .safetensors file or run folder holding {WEIGHTS}; "
                          f"expected {expected}")
    return path


def quadratize_options(adapter) -> dict:
    """`quadranet.quadratize` keyword arguments of a config's adapter section (`config.AdapterConfig`)."""
    return {k: getattr(adapter, k) for k in QUADRATIZE_KEYS}


def register_family(name: str, build: Callable, doc: str, module: str, namespace: dict) -> None:
    """Register `build(pretrained=..., **kwargs)` with timm as model `name` (a factory in `namespace`)."""
    def factory(pretrained: bool = False, **kwargs):
        return build(pretrained=pretrained, **kwargs)

    factory.__name__ = factory.__qualname__ = name
    factory.__module__ = module
    factory.__doc__ = doc
    namespace[name] = factory
    register_model(factory)


def without_timm_keys(kwargs: dict) -> dict:
    """`kwargs` less the keys timm's create_model passes every factory, which a model of our own does not take."""
    return {k: v for k, v in kwargs.items() if k not in ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir")}


def imagenet_cfg(name: str, model: nn.Module, side: int = 224, crop_pct: float = 0.875) -> dict:
    """The timm pretrained_cfg of a model of our own: ImageNet normalisation at input `side`."""
    return dict(architecture=name, input_size=(model.in_chans, side, side), mean=(0.485, 0.456, 0.406),
                std=(0.229, 0.224, 0.225), num_classes=model.num_classes, interpolation="bicubic", crop_pct=crop_pct)


def register_sizes(prefix: str, configs: dict, build: Callable, doc: str, module: str, namespace: dict) -> None:
    """Register `build(size, **kwargs)` with timm as `<prefix>_<size>` for every size of `configs` (doc: formatted
    with `size` and `cfg`). These models are trained from scratch here: pretrained=True is refused."""
    for size, cfg in configs.items():
        def make(pretrained: bool = False, _size: str = size, **kwargs):
            if pretrained:
                raise ValueError(f"{prefix}_{_size} has no pretrained weights: it is trained from scratch here")
            return build(_size, **kwargs)

        register_family(f"{prefix}_{size}", make, doc.format(size=size, cfg=cfg), module, namespace)
