"""The model of a classification run, built from its config.

Methods (arXiv 2405.03192 and its baselines):
- scratch: `model.arch` from random init; first-order, QuadraNet V1 (`quadranet_v1_*`), or with
  `model.quadratic` the arch quadratized with random primary weights;
- adapt: pretrained first-order weights -> quadratize -> train (QuadraNet V2);
- finetune: the same pretrained weights, plain first-order training;
- lora: the same layers get a linear low-rank adapter at the quadratic adapter's parameter budget.
"""
from __future__ import annotations

from torch import nn

from .. import convert
from ..config import ConfigError
from ..models.build import create_model, quadratize_options, weights_file
from ..models.pretrained import PRETRAINED
from ..models.pretrained import pretrained as offline_pretrained
from .config import RunConfig

__all__ = ["build_model", "build_structure", "parameter_groups", "set_trainable"]


def _load_run_weights(model: nn.Module, source: str, reset_head: bool = False) -> list[str]:
    """Load a first-order run's weights; a head of another class count (or any head, with `reset_head`) is left
    at its fresh init. Returns the keys left at init."""
    from safetensors.torch import load_file

    path = weights_file(source)
    state = load_file(str(path))
    own = model.state_dict()
    head = model.get_classifier()
    prefix = next((n + "." for n, mod in model.named_modules() if mod is head), None)
    head_keys = {k for k in own if prefix and k.startswith(prefix)}
    fresh = sorted(k for k in head_keys if k in state and (reset_head or state[k].shape != own[k].shape))
    state = {k: v for k, v in state.items() if k not in fresh}
    missing, unexpected = model.load_state_dict(state, strict=False)
    bad_missing = [k for k in missing if k not in fresh]
    if bad_missing or unexpected:
        raise ConfigError(f"model.pretrained={source!r} does not fit model.arch={model.__class__.__name__}: "
                          f"missing {bad_missing[:5]}, unexpected {unexpected[:5]} (is it a first-order run?)")
    return fresh


def build_model(cfg: RunConfig, num_classes: int) -> tuple[nn.Module, dict]:
    """The run's model and what happened building it (head re-initialised, LoRA rank chosen, ...)."""
    m, info = cfg.model, {}
    if cfg.method == "scratch":
        model = build_structure(cfg, num_classes)
        if cfg.model.quadratic:
            convert.init_quadratic_for_scratch(model)
        return model, info
    common = dict(num_classes=num_classes, drop_path_rate=m.drop_path_rate)
    if cfg.data.channels != 3:
        raise ConfigError(f"data.channels={cfg.data.channels} but pretrained weights take 3 channels; set "
                          f"data.channels=3")
    if m.pretrained == "offline":
        if m.arch not in PRETRAINED:
            raise ConfigError(f"model.pretrained='offline' has weights for {sorted(PRETRAINED)}, not "
                              f"model.arch={m.arch!r}; pretrain it with a first-order run and pass its folder")
        model = offline_pretrained(m.arch, **common).train()
        if m.reset_head and num_classes == 1000:
            model.reset_classifier(num_classes)
        info["head_reinitialised"] = num_classes != 1000 or m.reset_head
    else:
        model = create_model(m.arch, **common)
        info["head_reinitialised"] = bool(_load_run_weights(model, m.pretrained, m.reset_head))
    if cfg.method == "adapt":
        convert.quadratize(model, **quadratize_options(cfg.adapter))
    elif cfg.method == "lora":
        ranks = _lora_ranks(cfg, model)
        info["lora_rank"] = ranks if isinstance(ranks, int) else min(ranks.values())
        if not isinstance(ranks, int):  # matched per layer: the ranks and how close the budgets are
            info["lora_ranks"] = ranks
        convert.lora_adapt(model, rank=ranks, targets=cfg.adapter.targets)
    return model, info


def _lora_ranks(cfg: RunConfig, model: nn.Module):
    """adapter.lora_rank, else the LoRA ranks per layer adding as many parameters as the quadratic adapter would
    (`convert.matched_lora_rank`)."""
    if cfg.adapter.lora_rank:
        return cfg.adapter.lora_rank
    kwargs = quadratize_options(cfg.adapter)
    return convert.matched_lora_rank(model, kwargs.pop("rank"), **kwargs).ranks


def build_structure(cfg: RunConfig, num_classes: int) -> nn.Module:
    """The network a run of `cfg` trains, at random init (to load that run's own weights into)."""
    model = create_model(cfg.model.arch, in_chans=cfg.data.channels, num_classes=num_classes,
                         drop_path_rate=cfg.model.drop_path_rate)
    if cfg.method == "adapt" or cfg.model.quadratic:
        convert.quadratize(model, **quadratize_options(cfg.adapter))
    elif cfg.method == "lora":
        convert.lora_adapt(model, rank=_lora_ranks(cfg, model), targets=cfg.adapter.targets)
    return model


def parameter_groups(model: nn.Module) -> dict:
    """The groups a stage may train (`quadranet.config.TRAINABLE`): ids of their parameters."""
    quadratic = {id(p) for p in convert.quadratic_parameters(model)}
    lora = {id(p) for p in convert.lora_parameters(model)}
    head = model.get_classifier() if hasattr(model, "get_classifier") else None
    every = {id(p) for p in model.parameters()}
    return {"all": every, "quadratic": quadratic, "lora": lora, "primary": every - quadratic - lora,
            "head": {id(p) for p in head.parameters()} if head is not None else set()}


def set_trainable(model: nn.Module, groups: list) -> int:
    """Train exactly the union of `groups` (`quadranet.config.TRAINABLE`); returns the number of trainable
    parameters."""
    return convert.train_only(model, groups, parameter_groups(model))
