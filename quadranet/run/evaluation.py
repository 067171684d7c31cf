"""Evaluating a finished run's model: which overrides it may take, and the timed, provenance-stamped result."""
from __future__ import annotations

from typing import Callable, Optional

from torch import nn

from .. import atomic
from ..config import ConfigError
from . import accounting
from .device import amp_dtype, resolve_device
from .distributed import DistInfo


def check_eval_overrides(overrides: tuple, allowed: tuple = ("data.", "train.device")) -> None:
    """Evaluating a finished run may change its data and where it runs, nothing it was trained with."""
    bad = [o for o in overrides if not o.startswith(allowed)]
    if bad:
        raise ConfigError(f"eval overrides must be data.* (or {' / '.join(allowed[1:])}), got {bad}")


def evaluate_model(cfg, model: nn.Module, fn: Callable, chash: Optional[str] = None, out=None, **fields) -> dict:
    """`fn(model, device, info, amp)` of a finished run's model, on one device, timed, with provenance; written
    to JSON file `out` if given."""
    device = resolve_device(cfg.train.device, key="train.device")
    model.to(device)
    clock = accounting.DeviceClock(device, 1)
    clock.start("eval")
    result = fn(model, device, DistInfo(), amp_dtype(cfg.train.amp, device))
    clock.stop()
    result.update(**fields, device_seconds=clock.seconds["eval"],
                  provenance=accounting.provenance(cfg.to_dict(), chash, cfg.seed, 1, device.type))
    if out:
        atomic.write_json(out, result)
    return result
