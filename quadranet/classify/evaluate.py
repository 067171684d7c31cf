"""Evaluate a finished run's weights, on its own eval data or on other data (`data.*` overrides)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from ..config import load_config
from ..models.build import WEIGHTS
from ..run.session import check_eval_overrides, evaluate_model
from .build import build_data, build_structure, num_classes
from .train import evaluate


def evaluate_run(run, overrides: tuple = (), out: Optional[str] = None) -> dict:
    """Top-1/top-5 of the model in run folder `run` (its config.yaml and model.safetensors)."""
    from safetensors.torch import load_file

    run = Path(run)
    for name in ("config.yaml", WEIGHTS):
        if not (run / name).is_file():
            raise FileNotFoundError(f"{run / name} not found; expected the --out folder of a finished quadranet train run")
    check_eval_overrides(overrides)
    cfg = load_config(run / "config.yaml", overrides)
    model = build_structure(cfg, num_classes(cfg))
    model.load_state_dict(load_file(str(run / WEIGHTS)))
    _, eval_set = build_data(cfg, model)
    return evaluate_model(cfg, model, lambda m, device, info, amp: evaluate(m, eval_set, cfg, device, info, amp),
                          None, out, run=str(run), overrides=list(overrides))
