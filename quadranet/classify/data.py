"""The data of a classification run: its train and eval sets, its class count, batches moved to the device."""
from __future__ import annotations

import torch
from torch import nn

from ..config import ConfigError
from ..data import build_dataset, imagenet21k, loaders, make_shift
from .config import RunConfig

__all__ = ["build_datasets", "check_data", "num_classes", "to_device"]


def num_classes(cfg: RunConfig) -> int:
    """The run's class count: model.num_classes, else the dataset's."""
    if cfg.model.num_classes is not None:
        return cfg.model.num_classes
    if cfg.data.dataset == "fashion_mnist":
        return len(cfg.data.classes) if cfg.data.classes else 10
    if cfg.data.dataset == "imagenet1k":
        return 1000
    return imagenet21k(cfg.data.root, "train", transform=lambda x: x).num_classes


def check_data(cfg: RunConfig) -> None:
    """Raise a clear error, saying how to install it, when the run's dataset is not where its config says."""
    loaders.check_data(cfg.data.dataset, cfg.data.root)


def build_datasets(cfg: RunConfig, model: nn.Module) -> tuple:
    """(train set, eval set) of the run; images normalised as the model's pretrained_cfg says."""
    d = cfg.data
    if d.dataset == "fashion_mnist":
        mean = std = None
        if d.normalize == "model":
            pc = getattr(model, "pretrained_cfg", {}) or {}
            mean, std = pc.get("mean", (0.5,)), pc.get("std", (0.5,))
            if d.channels == 1:
                mean, std = (sum(mean) / len(mean),), (sum(std) / len(std),)
        common = dict(resolution=d.resolution, channels=d.channels, mean=mean, std=std, classes=d.classes,
                      val_size=d.val_size, split_seed=d.split_seed, shift=d.shift,
                      shift_strength=d.shift_strength if d.shift else None, root=d.root)
        train = build_dataset("fashion_mnist", "train", per_class=d.train_per_class, limit=d.train_limit,
                              seed=d.split_seed, **common)
        evals = build_dataset("fashion_mnist", d.eval_split, limit=d.eval_limit, seed=d.split_seed + 1, **common)
        return train, evals
    if d.classes:
        raise ConfigError(f"data.classes applies to fashion_mnist only, not data.dataset={d.dataset!r}")
    from timm.data import resolve_data_config

    tcfg = resolve_data_config({}, model=model)
    tcfg["input_size"] = (3, d.resolution, d.resolution)
    if d.normalize == "none":
        tcfg.update(mean=(0.0,) * 3, std=(1.0,) * 3)
    keep = {k: tcfg[k] for k in ("input_size", "crop_pct", "interpolation", "mean", "std")}
    shift = make_shift(d.shift, d.shift_strength) if d.shift else None
    return (build_dataset(d.dataset, "train", root=d.root, shift=shift, per_class=d.train_per_class,
                          limit=d.train_limit, seed=d.split_seed, **keep),
            build_dataset(d.dataset, "val", root=d.root, shift=shift, limit=d.eval_limit, seed=d.split_seed + 1,
                          **keep))


def to_device(x: torch.Tensor, y: torch.Tensor, device: torch.device, channels_last: bool) -> tuple:
    """A batch of images `x` and labels `y` on `device` (images in channels-last layout if `channels_last`)."""
    x = x.to(device, non_blocking=True)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x, y.to(device, non_blocking=True)
