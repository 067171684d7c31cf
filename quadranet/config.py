"""The config kit every task's run config is built with: one YAML file per run, `section.key=value`
overrides, typed dataclasses validated with clear errors, and the config hash.

Each task declares its config as dataclasses with typed defaults (`quadranet.classify.config`,
`quadranet.detection.config`), so a config file only states what differs. Unknown keys, values of the wrong
type and values outside their allowed set fail at once with one error naming the key, the bad value and what
is allowed. A config hash identifies what a run computes (run-control keys left out), so a resumed run can
refuse a checkpoint written under another configuration.
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

from .layers.product import KERNELS

# The methods of arXiv 2405.03192 and its baselines, and the parameter groups a run may train: every task's
# config takes its choices from these (detection has no LoRA baseline).
METHODS = ("scratch", "adapt", "finetune", "lora")
TRAINABLE = ("all", "quadratic", "lora", "head", "primary")
DEFAULT_TRAINABLE = {"scratch": ["all"], "finetune": ["all"], "adapt": ["quadratic", "head"], "lora": ["lora", "head"]}
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
class TaskConfig:
    """What every task's run config starts with; each task adds its model, adapter, data and train sections."""
    method: str = "scratch"
    seed: int = 0
    name: Optional[str] = None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


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
        item = (typing.get_args(hint) or (None,))[0]  # a list[SomeConfig] field: a list of sections
        if dataclasses.is_dataclass(hint):
            kwargs[name] = build(hint, data[name] or {}, key + ".")
        elif typing.get_origin(hint) is list and dataclasses.is_dataclass(item):
            kwargs[name] = [build(item, s, f"{key}[{i}].") for i, s in enumerate(_check_type(key, data[name], list))]
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


def config_data(path: Union[str, Path, None], overrides: tuple, *layers: Optional[dict]) -> dict:
    """The nested dict a task builds its config from: `layers` (dicts: a preset, a base), then YAML file `path`,
    merged in that order (`deep_merge`), then `overrides` ('a.b=value') set, numbers read as numbers."""
    data = deep_merge(*layers, read_yaml(path) if path is not None else None)
    return fix_numbers(apply_overrides(data, overrides))


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


def to_yaml(cfg) -> str:
    """A config dataclass (any task's) as YAML, keys in their declared order."""
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)
