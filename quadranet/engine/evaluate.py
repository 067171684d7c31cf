"""Evaluate a finished run's weights, on its own eval data or on other data (`data.*` overrides)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional


from .. import io
from ..config import ConfigError, load_config
from . import accounting
from .build import WEIGHTS, build_data, build_structure
from .distributed import DistInfo
from .train import _amp_dtype, _num_classes, evaluate, resolve_device


def evaluate_run(run, overrides: tuple = (), out: Optional[str] = None) -> dict:
    """Top-1/top-5 of the model in run folder `run` (its config.yaml and model.safetensors)."""
    from safetensors.torch import load_file

    run = Path(run)
    for name in ("config.yaml", WEIGHTS):
        if not (run / name).is_file():
            raise FileNotFoundError(f"{run / name} not found; expected the --out folder of a finished quadranet train run")
    bad = [o for o in overrides if not (o.startswith("data.") or o.startswith("train.device"))]
    if bad:
        raise ConfigError(f"eval overrides must be data.* (or train.device), got {bad}")
    cfg = load_config(run / "config.yaml", overrides)
    model = build_structure(cfg, _num_classes(cfg))
    model.load_state_dict(load_file(str(run / WEIGHTS)))
    device = resolve_device(cfg, DistInfo())
    model.to(device)
    _, eval_set = build_data(cfg, model)
    clock = accounting.DeviceClock(device, 1)
    clock.start("eval")
    result = evaluate(model, eval_set, cfg, device, DistInfo(), _amp_dtype(cfg, device))
    clock.stop()
    result.update(run=str(run), overrides=list(overrides), device_seconds=clock.seconds["eval"],
                  provenance=accounting.provenance(cfg.to_dict(), None, cfg.seed, 1, device.type))
    if out:
        io.write_json(out, result)
    return result
