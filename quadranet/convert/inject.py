"""Choose layers of a network, wrap them in adapters in place, and unwrap them again.

Like peft's LoRA tuner: each chosen layer is replaced by a wrapper that keeps the original layer (the primary
term) and adds a term beside it (the quadratic term, or the low-rank term of the LoRA baseline); everything else
is untouched, so any timm or torchvision model converts.
"""
from __future__ import annotations

import fnmatch
from typing import Mapping, Optional, Sequence, Union

from torch import nn

from ..layers import AdapterLayer, LowRankAdapter, QuadraticAdapter, is_supported

# Layer types that `targets` may name; anything else in `targets` is a glob over module names.
LAYER_TYPES = ("auto", "depthwise", "spatial", "pointwise", "conv", "linear")


def _is_depthwise(m: nn.Module) -> bool:
    return isinstance(m, nn.Conv2d) and m.groups > 1 and m.groups == m.in_channels


def _is_spatial(m: nn.Module) -> bool:
    return isinstance(m, nn.Conv2d) and any(k > 1 for k in m.kernel_size)


def _type_matches(m: nn.Module, kind: str, has_depthwise: bool) -> bool:
    if kind == "auto":  # as in QuadraNet: the depthwise spatial convs where there are any, else all spatial
        return _is_spatial(m) and (_is_depthwise(m) or not has_depthwise)
    if kind == "depthwise":
        return _is_depthwise(m) and _is_spatial(m)
    if kind == "spatial":
        return _is_spatial(m)
    if kind == "pointwise":
        return isinstance(m, nn.Conv2d) and not _is_spatial(m)
    if kind == "conv":
        return isinstance(m, nn.Conv2d)
    return isinstance(m, nn.Linear)


def select_layers(model: nn.Module, targets: Union[str, Sequence[str], None] = None) -> list[str]:
    """Names of the layers `targets` chooses.

    `targets` holds layer types (one of LAYER_TYPES) and module-name globs (fnmatch, on the full dotted
    name); a layer is chosen when it matches any of the types (default `auto`) and any of the globs
    (default all). Each glob must choose at least one layer.
    """
    items = [targets] if isinstance(targets, str) else list(targets or [])
    kinds = [t for t in items if t in LAYER_TYPES] or ["auto"]
    globs = [t for t in items if t not in LAYER_TYPES]
    candidates = [(n, m) for n, m in model.named_modules() if n and is_supported(m)]
    has_dw = any(_is_depthwise(m) and _is_spatial(m) for _, m in candidates)
    typed = [n for n, m in candidates if any(_type_matches(m, k, has_dw) for k in kinds)]
    if not globs:
        chosen = typed
    else:
        chosen = [n for n in typed if any(fnmatch.fnmatchcase(n, g) for g in globs)]
        for g in globs:
            if not any(fnmatch.fnmatchcase(n, g) for n in typed):
                near = ", ".join(typed[:5]) + (", ..." if len(typed) > 5 else "")
                raise ValueError(
                    f"target pattern {g!r} matches no {'/'.join(kinds)} layer of {type(model).__name__}; "
                    f"layer types are {LAYER_TYPES}, patterns are fnmatch globs over names such as: {near}"
                )
    if not chosen:
        raise ValueError(f"targets={targets!r} select no layer of {type(model).__name__}")
    return chosen


def replace_layer(model: nn.Module, name: str, new: nn.Module) -> None:
    """Put `new` in place of the submodule `name` (a dotted name) of `model`."""
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def _adapt(model: nn.Module, targets, make) -> nn.Module:
    """Replace each layer `targets` chooses by `make(layer, name)`, in place. All adapters are built before any
    layer is replaced, so an error leaves `model` as it was."""
    for name, m in model.named_modules():
        if isinstance(m, AdapterLayer):
            raise ValueError(f"{type(model).__name__} is already adapted (already quadratized or LoRA-adapted: "
                             f"{type(m).__name__} at {name!r}); call unquadratize() or unlora() first")
    new = {name: make(model.get_submodule(name), name) for name in select_layers(model, targets)}
    for name, adapter in new.items():
        replace_layer(model, name, adapter)
    return model


def _replace_all(model: nn.Module, plain: dict) -> nn.Module:
    """`model` with each module named in `plain` replaced by its value (the model itself for the name '')."""
    for name, layer in plain.items():
        if not name:
            return layer
        replace_layer(model, name, layer)
    return model


def find_adapters(model: nn.Module, cls: type = AdapterLayer) -> list[tuple[str, AdapterLayer]]:
    """(name, adapter) of every adapter layer of class `cls` in `model`."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, cls)]


def quadratic_adapters(model: nn.Module) -> list[tuple[str, QuadraticAdapter]]:
    """(name, adapter) of every `QuadraticAdapter` in `model`."""
    return find_adapters(model, QuadraticAdapter)


def lora_adapters(model: nn.Module) -> list[tuple[str, LowRankAdapter]]:
    """(name, adapter) of every `LowRankAdapter` in `model`."""
    return find_adapters(model, LowRankAdapter)


# ---- the quadratic adapter ----


def quadratize(
    model: nn.Module,
    rank: int = 4,
    dilation: int = 2,
    kernel_size: Optional[int] = 3,
    kernel: str = "bilinear",
    targets: Union[str, Sequence[str], None] = None,
    memory_efficient: bool = False,
    freeze_primary: bool = False,
    sigma: float = 1.0,
) -> nn.Module:
    """Wrap the chosen layers of `model` in `QuadraticAdapter`s, in place, and return `model`.

    At init the converted model computes exactly the original function (the quadratic term's output
    projection is zero). `kernel_size=None` uses each layer's own kernel size. `kernel`: `bilinear`, `rbf` or
    `rbf_in` (`QuadraticAdapter`); `sigma`: the RBF kernels' width.
    """
    return _adapt(model, targets, lambda layer, name: QuadraticAdapter(
        layer, rank=rank, kernel_size=kernel_size, dilation=dilation, kernel=kernel,
        memory_efficient=memory_efficient, freeze_primary=freeze_primary, name=name, sigma=sigma))


def unquadratize(model: nn.Module) -> nn.Module:
    """Replace every `QuadraticAdapter` by its primary layer, in place: the plain first-order model.

    A trained quadratic term cannot be merged into a linear layer, so it is dropped.
    """
    return _replace_all(model, {name: a.primary for name, a in quadratic_adapters(model)})


# ---- the linear baseline: low-rank (LoRA) adapters on the same layers ----


def lora_adapt(
    model: nn.Module,
    rank: Union[int, Mapping[str, int]] = 4,
    targets: Union[str, Sequence[str], None] = None,
    kernel_size: Optional[int] = None,
    dilation: Optional[int] = 1,
    freeze_primary: bool = False,
) -> nn.Module:
    """Wrap the layers `targets` chooses (as in `quadratize`) in `LowRankAdapter`s, in place; return `model`.

    Exact at init (B is zero). `rank`: one rank for every layer, or layer name -> rank (`matched_lora_rank`'s
    `ranks`: every chosen layer must be named). `kernel_size=None` / `dilation=None` give A each layer's own kernel
    size / dilation: then the adapter can be merged (`unlora`); dilation 1 equals that on undilated layers. All
    adapters are built before any layer is replaced, so an error leaves `model` as it was.
    """
    def rank_of(name: str) -> int:
        if not isinstance(rank, Mapping):
            return rank
        if name not in rank:
            raise ValueError(f"lora_adapt: rank names no rank for layer {name!r}; it names {sorted(rank)[:8]}")
        return rank[name]

    return _adapt(model, targets, lambda layer, name: LowRankAdapter(
        layer, rank=rank_of(name), kernel_size=kernel_size, dilation=dilation, freeze_primary=freeze_primary,
        name=name))


def unlora(model: nn.Module, merge: bool = True) -> nn.Module:
    """Replace every `LowRankAdapter` by a plain layer, in place: with `merge`, one computing primary + B A
    (ValueError where A's kernel or dilation differ from the primary's); else the primary alone (B A dropped)."""
    # merge all first: fail atomically
    return _replace_all(model, {name: a.merge() if merge else a.primary for name, a in lora_adapters(model)})


def merge_lora(model: nn.Module, strict: bool = True) -> nn.Module:
    """Merge every LowRankAdapter into a plain layer computing primary + B A, in place, as peft's
    `merge_and_unload`: the same outputs at no added cost. ValueError naming the layers that cannot merge (A's taps
    off the primary's); with `strict=False` those stay adapters."""
    found = lora_adapters(model)
    bad = [name for name, a in found if not a.mergeable]
    if bad and strict:
        raise ValueError(f"LoRA layers {bad[:5]}{' ...' if len(bad) > 5 else ''} cannot merge: their A reads pixels "
                         f"that the primary's kernel does not (kernel size / dilation off the primary's taps)")
    return _replace_all(model, {name: a.merge() for name, a in found if a.mergeable})
