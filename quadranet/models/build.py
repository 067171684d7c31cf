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

__all__ = ["QUADRATIZE_KEYS", "WEIGHTS", "create_model", "quadratize_options", "register_family", "resolve_arch",
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
