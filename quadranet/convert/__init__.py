"""Convert a first-order network into a QuadraNet V2 one, report what changed, and convert back.

Like peft's LoRA tuner: the chosen layers are replaced in place by a wrapper that keeps the original
layer (the primary term) and adds the quadratic term beside it; everything else is untouched, so any
timm or torchvision model converts.
"""
from __future__ import annotations

import contextlib
import copy
import fnmatch
import math
import statistics
from dataclasses import asdict, dataclass
from typing import Mapping, NamedTuple, Optional, Sequence, Union

import torch
from torch import nn

from ..layers import AdapterLayer, LowRankAdapter, QuadraticAdapter, QuadraticConv2d, QuadraticLinear, is_supported

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


def _set_submodule(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


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


def _adapt(model: nn.Module, targets, make) -> nn.Module:
    """Replace each layer `targets` chooses by `make(layer, name)`, in place. All adapters are built before any
    layer is replaced, so an error leaves `model` as it was."""
    for name, m in model.named_modules():
        if isinstance(m, AdapterLayer):
            raise ValueError(f"{type(model).__name__} is already adapted (already quadratized or LoRA-adapted: "
                             f"{type(m).__name__} at {name!r}); call unquadratize() or unlora() first")
    new = {name: make(model.get_submodule(name), name) for name in select_layers(model, targets)}
    for name, adapter in new.items():
        _set_submodule(model, name, adapter)
    return model


def _replace(model: nn.Module, plain: dict) -> nn.Module:
    """`model` with each module named in `plain` replaced by its value (the model itself for the name '')."""
    for name, layer in plain.items():
        if not name:
            return layer
        _set_submodule(model, name, layer)
    return model


def unquadratize(model: nn.Module) -> nn.Module:
    """Replace every `QuadraticAdapter` by its primary layer, in place: the plain first-order model.

    A trained quadratic term cannot be merged into a linear layer, so it is dropped.
    """
    return _replace(model, {name: a.primary for name, a in adapters(model)})


def find_adapters(model: nn.Module, cls: type = AdapterLayer) -> list[tuple[str, AdapterLayer]]:
    """(name, adapter) of every adapter layer of class `cls` in `model`."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, cls)]


def adapters(model: nn.Module) -> list[tuple[str, QuadraticAdapter]]:
    return find_adapters(model, QuadraticAdapter)


def added_parameters(model: nn.Module, cls: type = AdapterLayer) -> list[nn.Parameter]:
    """Parameters of the added terms of every adapter of class `cls` (all but the primary layers)."""
    return [p for _, a in find_adapters(model, cls) for n, p in a.named_parameters() if not n.startswith("primary.")]


def quadratic_parameters(model: nn.Module) -> list[nn.Parameter]:
    """Parameters of the quadratic terms (A, B, P of every adapter)."""
    return added_parameters(model, QuadraticAdapter)


def train_only(model: nn.Module, groups: Sequence[str], table: dict) -> int:
    """Train exactly the union of `groups` (names of `table`: group -> ids of parameters of `model`); returns the
    number of trainable parameters. ValueError when that is none."""
    chosen = set().union(*(table[g] for g in groups))
    n = 0
    for p in model.parameters():
        p.requires_grad_(id(p) in chosen)
        n += p.numel() if id(p) in chosen else 0
    if n == 0:
        raise ValueError(f"trainable={list(groups)} selects no parameter of this {type(model).__name__}")
    return n


def mark_only_quadratic_trainable(model: nn.Module) -> nn.Module:
    """Freeze everything but the quadratic terms (stage 1 of adaptation)."""
    model.requires_grad_(False)
    for p in quadratic_parameters(model):
        p.requires_grad_(True)
    return model


@torch.no_grad()
def init_quadratic_for_scratch(model: nn.Module) -> nn.Module:
    """Give every adapter's projection P torch's default (kaiming-uniform) init instead of zero, in place.

    A network trained from scratch has no function to preserve; with P = 0 its quadratic terms would start
    at zero and, in short schedules, stay negligible, so the "quadratic network from scratch" would be the
    first-order one. With every factor random the quadratic term contributes from the first step.
    """
    for _, a in adapters(model):
        a.quad_out.reset_parameters()
    return model


def _term_and_primary(m: nn.Module, x: torch.Tensor, out: torch.Tensor):
    """(higher-order or low-rank term, first-order part) of one layer's output `out` on input `x`."""
    if isinstance(m, AdapterLayer):
        return m.term(x), m.primary(x)
    if isinstance(m, (QuadraticConv2d, QuadraticLinear)):  # V1: f_a(x) * f_b(x) beside f_c(x)
        first = (m.conv_c if isinstance(m, QuadraticConv2d) else m.fc_c)(x)
        return out - first, first
    raise TypeError(f"{type(m).__name__} has no added term")


@torch.no_grad()
def layer_shares(model: nn.Module, batches, types=(AdapterLayer, QuadraticConv2d, QuadraticLinear),
                 empty: float = math.nan) -> dict:
    """{layer name: RMS(term) / RMS(first-order output)} of every layer of `types` over the inputs `batches`
    (`empty` where the first-order output is zero throughout)."""
    sums, hooks = {}, []

    def hook(m, args, out, name):
        term, primary = _term_and_primary(m, args[0], out)
        sums.setdefault(name, torch.zeros(2, dtype=torch.float64))
        sums[name] += torch.stack([term.double().square().sum(), primary.double().square().sum()]).cpu()

    for name, m in model.named_modules():
        if isinstance(m, types):
            hooks.append(m.register_forward_hook(lambda m, a, o, n=name: hook(m, a, o, n)))
    was = model.training
    model.eval()
    try:
        for x in batches if hooks else ():
            model(x)
    finally:
        for h in hooks:
            h.remove()
        model.train(was)
    return {n: float((t / p).sqrt()) if p > 0 else empty for n, (t, p) in sums.items()}


def quadratic_share(model: nn.Module, batches) -> Optional[dict]:
    """RMS(term) / RMS(first-order output) of every quadratic (or LoRA) layer over the inputs `batches`:
    {"median", "max", "layers"} over layers, or None for a model without such layers.

    Says whether the added term does anything: 0 at the init of an adapter, and still ~0 after training
    if the term never grew.
    """
    ratios = sorted(layer_shares(model, batches).values())
    if not ratios:
        return None
    return {"median": statistics.median(ratios), "max": max(ratios), "layers": len(ratios)}


@contextlib.contextmanager
def quadratic_disabled(model: nn.Module):
    """Within the block every adapter computes its primary layer alone."""
    states = [(a, a.enabled) for _, a in adapters(model)]
    try:
        for a, _ in states:
            a.enabled = False
        yield model
    finally:
        for a, enabled in states:
            a.enabled = enabled


@dataclass
class ConvertedLayer:
    name: str
    primary: str  # e.g. "Conv2d(96, 96, k=7, g=96)"
    rank: int
    kernel_size: Optional[tuple]
    dilation: Optional[tuple]
    params_primary: int
    params_added: int
    flops_added: int


@dataclass
class ConversionReport:
    layers: list
    params_model: int  # parameters of the converted model
    params_added: int
    flops_model: int  # FLOPs of one forward of the converted model at `input_size`
    flops_added: int
    input_size: tuple

    @property
    def params_overhead(self) -> float:
        return self.params_added / (self.params_model - self.params_added)

    @property
    def flops_overhead(self) -> float:
        return self.flops_added / (self.flops_model - self.flops_added)

    def rows(self) -> list[dict]:
        return [asdict(r) for r in self.layers]

    def __str__(self) -> str:
        return (f"{len(self.layers)} layers converted: +{self.params_added:,} params "
                f"({100 * self.params_overhead:.2f}%), +{self.flops_added:,} FLOPs "
                f"({100 * self.flops_overhead:.2f}%) at input {self.input_size}")


def count_flops(fn, *args) -> int:
    """FLOPs of `fn(*args)` (torch FlopCounterMode: 2 per multiply-add), convolutions counted as written."""
    from torch.utils.flop_counter import FlopCounterMode

    from ..layers.grouped import conv_formulation

    with FlopCounterMode(display=False) as counter, torch.no_grad(), conv_formulation():
        fn(*args)
    return counter.get_total_flops()


def model_flops(model: nn.Module, input_size: Sequence[int]) -> int:
    """Forward FLOPs of `model` (in eval mode) on one random input of `input_size` (C, H, W)."""
    p = next(model.parameters())
    was = model.training
    model.eval()
    try:
        return count_flops(model, torch.randn(1, *input_size, device=p.device, dtype=p.dtype))
    finally:
        model.train(was)


def conversion_report(model: nn.Module, input_size: Sequence[int] = (3, 224, 224)) -> ConversionReport:
    """What `quadratize` changed in `model`: layers, parameters and FLOPs added at one input of `input_size`.

    FLOPs are those torch's FlopCounterMode counts (2 per multiply-add of convolutions and matrix
    products, per image); elementwise products are left out, as in the usual FLOP tables.
    """
    found = list(adapters(model))
    if not found:
        raise ValueError(f"{type(model).__name__} holds no QuadraticAdapter; call quadratize() first")
    p = next(model.parameters())
    x = torch.randn(1, *input_size, device=p.device, dtype=p.dtype)
    inputs = {}
    hooks = [a.register_forward_pre_hook(lambda m, args, n=name: inputs.__setitem__(n, args[0]))
             for name, a in found]
    was_training = model.training
    model.eval()
    try:
        flops = count_flops(model, x)
        # an adapter adds exactly its quadratic term: count that on the input it saw
        per_layer = {name: count_flops(a.quadratic, inputs[name]) for name, a in found}
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    rows = []
    for name, a in found:
        prim = a.primary
        desc = (f"Conv2d({prim.in_channels}, {prim.out_channels}, k={prim.kernel_size[0]}, g={prim.groups})"
                if isinstance(prim, nn.Conv2d) else f"Linear({prim.in_features}, {prim.out_features})")
        added = sum(q.numel() for n, q in a.named_parameters() if not n.startswith("primary."))
        rows.append(ConvertedLayer(name, desc, a.rank, a.kernel_size, a.dilation,
                                   sum(q.numel() for q in prim.parameters()), added, per_layer[name]))
    return ConversionReport(
        layers=rows,
        params_model=sum(q.numel() for q in model.parameters()),
        params_added=sum(r.params_added for r in rows),
        flops_model=flops,
        flops_added=sum(per_layer.values()),
        input_size=tuple(input_size),
    )


def load_first_order_state_dict(model: nn.Module, state_dict: dict, strict: bool = True) -> nn.Module:
    """Load a first-order model's state dict into its quadratized version (primary terms get the weights).

    Keys of converted layers are renamed `<layer>.<param>` -> `<layer>.primary.<param>`; shapes are checked
    first, so a wrong state dict fails with one error naming the key, the shape found and the shape expected.
    """
    prefixes = [name + "." for name, _ in adapters(model)]
    renamed = {}
    for key, value in state_dict.items():
        prefix = next((p for p in prefixes if key.startswith(p)), None)
        renamed[key if prefix is None else prefix + "primary." + key[len(prefix):]] = value
    own = model.state_dict()
    for key, value in renamed.items():
        if key in own and tuple(own[key].shape) != tuple(value.shape):
            raise ValueError(f"state dict entry {key!r} has shape {tuple(value.shape)}; "
                             f"{type(model).__name__} expects {tuple(own[key].shape)}")
    quad_keys = {k for p in prefixes for k in own if k.startswith(p) and not k.startswith(p + "primary.")}
    missing = [k for k in own if k not in renamed and k not in quad_keys]
    unexpected = [k for k in renamed if k not in own]
    if strict and (missing or unexpected):
        raise ValueError(f"state dict does not fit {type(model).__name__}: missing keys {missing[:5]}"
                         f"{' ...' if len(missing) > 5 else ''}, unexpected keys {unexpected[:5]}"
                         f"{' ...' if len(unexpected) > 5 else ''}")
    model.load_state_dict(renamed, strict=False)
    return model


# ---- The linear baseline: low-rank (LoRA) adapters on the same layers, at a matched parameter budget ----


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


def lora_adapters(model: nn.Module) -> list[tuple[str, LowRankAdapter]]:
    return find_adapters(model, LowRankAdapter)


def lora_parameters(model: nn.Module) -> list[nn.Parameter]:
    """Parameters of the low-rank terms (A, B of every LowRankAdapter)."""
    return added_parameters(model, LowRankAdapter)


def unlora(model: nn.Module, merge: bool = True) -> nn.Module:
    """Replace every `LowRankAdapter` by a plain layer, in place: with `merge`, one computing primary + B A
    (ValueError where A's kernel or dilation differ from the primary's); else the primary alone (B A dropped)."""
    # merge all first: fail atomically
    return _replace(model, {name: a.merge() if merge else a.primary for name, a in lora_adapters(model)})


def merge_lora(model: nn.Module, strict: bool = True) -> nn.Module:
    """Merge every LowRankAdapter into a plain layer computing primary + B A, in place, as peft's
    `merge_and_unload`: the same outputs at no added cost. ValueError naming the layers that cannot merge (A's taps
    off the primary's); with `strict=False` those stay adapters."""
    found = lora_adapters(model)
    bad = [name for name, a in found if not a.mergeable]
    if bad and strict:
        raise ValueError(f"LoRA layers {bad[:5]}{' ...' if len(bad) > 5 else ''} cannot merge: their A reads pixels "
                         f"that the primary's kernel does not (kernel size / dilation off the primary's taps)")
    return _replace(model, {name: a.merge() for name, a in found if a.mergeable})


class MatchedRank(NamedTuple):
    rank: int  # the LoRA rank of most layers (the others have rank + 1)
    lora_params: int  # parameters lora_adapt adds at `ranks`
    quadratic_params: int  # parameters quadratize adds at the quadratic rank
    lora_params_per_rank: int  # one rank step on every layer
    ranks: dict  # layer name -> its LoRA rank (rank or rank + 1), for lora_adapt(rank=ranks)

    @property
    def mismatch(self) -> float:
        """LoRA's added parameters over the quadratic adapter's, minus 1 (+0.03: LoRA adds 3% more)."""
        return self.lora_params / self.quadratic_params - 1


def matched_lora_rank(
    model: nn.Module,
    quadratic_rank: int,
    targets: Union[str, Sequence[str], None] = None,
    *,
    lora_kernel_size: Optional[int] = None,
    lora_dilation: Optional[int] = 1,
    **quadratic_kwargs,
) -> MatchedRank:
    """LoRA ranks per layer whose added parameters come closest to those `quadratize(model, quadratic_rank,
    targets, **quadratic_kwargs)` adds. `model` is not changed (both are counted on copies).

    A whole rank on every layer can miss the quadratic count by up to half a rank step (+32% on test_convnext),
    so every layer gets rank r = max(1, floor(quadratic / step)) and then, largest layers first, rank r + 1
    wherever that brings the total closer: within half the largest layer's step of the quadratic count.
    """
    if isinstance(quadratic_rank, bool) or not isinstance(quadratic_rank, int) or quadratic_rank <= 0:
        raise ValueError(f"quadratic_rank={quadratic_rank!r} must be a positive integer")
    quad = quadratize(copy.deepcopy(model), rank=quadratic_rank, targets=targets, **quadratic_kwargs)
    q = sum(p.numel() for p in quadratic_parameters(quad))
    del quad
    one = lora_adapt(copy.deepcopy(model), rank=1, targets=targets, kernel_size=lora_kernel_size,
                     dilation=lora_dilation)
    per_layer = {name: sum(p.numel() for m in (a.lora_a, a.lora_b) for p in m.parameters())
                 for name, a in lora_adapters(one)}
    step = sum(per_layer.values())
    rank = max(1, q // step)
    ranks, total = dict.fromkeys(per_layer, rank), rank * step
    for name in sorted(per_layer, key=lambda n: -per_layer[n]):  # stable: model order among equal layers
        if abs(total + per_layer[name] - q) < abs(total - q):
            ranks[name] += 1
            total += per_layer[name]
    return MatchedRank(rank, total, q, step, ranks)
