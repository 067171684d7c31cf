"""Parameter groups of an adapted network: what each adapter adds, which parameters train, the first-order
weights loaded under the adapters, and the LoRA rank that matches the quadratic adapter's parameter count."""
from __future__ import annotations

import copy
from typing import NamedTuple, Optional, Sequence, Union

import torch
from torch import nn

from ..layers import AdapterLayer, LowRankAdapter, QuadraticAdapter
from .inject import find_adapters, lora_adapt, lora_adapters, quadratic_adapters, quadratize


def added_parameters(model: nn.Module, cls: type = AdapterLayer) -> list[nn.Parameter]:
    """Parameters of the added terms of every adapter of class `cls` (all but the primary layers)."""
    return [p for _, a in find_adapters(model, cls) for n, p in a.named_parameters() if not n.startswith("primary.")]


def quadratic_parameters(model: nn.Module) -> list[nn.Parameter]:
    """Parameters of the quadratic terms (A, B, P of every adapter)."""
    return added_parameters(model, QuadraticAdapter)


def lora_parameters(model: nn.Module) -> list[nn.Parameter]:
    """Parameters of the low-rank terms (A, B of every LowRankAdapter)."""
    return added_parameters(model, LowRankAdapter)


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
    for _, a in quadratic_adapters(model):
        a.quad_out.reset_parameters()
    return model


def load_first_order_state_dict(model: nn.Module, state_dict: dict, strict: bool = True) -> nn.Module:
    """Load a first-order model's state dict into its quadratized version (primary terms get the weights).

    Keys of converted layers are renamed `<layer>.<param>` -> `<layer>.primary.<param>`; shapes are checked
    first, so a wrong state dict fails with one error naming the key, the shape found and the shape expected.
    """
    prefixes = [name + "." for name, _ in quadratic_adapters(model)]
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
