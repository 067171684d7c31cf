"""Checkpoints: written atomically, loaded with `weights_only=True`, refused when they do not fit the run; and
the weights file a finished run leaves (`WEIGHTS`, written atomically too).

A checkpoint holds model, optimizer, grad-scaler and RNG states plus the run's progress and log lines, so
a rerun of the same command continues exactly where the last checkpoint left it. A checkpoint that
cannot be read, or that was written under another config, stops the run with an error and stays on
disk untouched: deciding to throw work away is the user's call.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch
from torch import nn

from ..atomic import atomic_path

LAST = "last.pt"
WEIGHTS = "model.safetensors"  # a finished run's weights, in its folder


class CheckpointError(RuntimeError):
    """A checkpoint that is corrupt or belongs to another run."""


def save_checkpoint(directory, state: dict, name: str = LAST) -> Path:
    path = Path(directory) / name
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    return path


def load_checkpoint(directory, config_hash: str, name: str = LAST) -> Optional[dict]:
    """The checkpoint in `directory` (None if there is none), checked to be readable and of this config."""
    path = Path(directory) / name
    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for truncated / foreign files
        raise CheckpointError(
            f"checkpoint {path} cannot be read ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); "
            f"it was left untouched: move or delete it to start the run afresh") from None
    if not isinstance(state, dict) or "config_hash" not in state:
        raise CheckpointError(f"checkpoint {path} is not a quadranet training checkpoint; it was left untouched")
    if state["config_hash"] != config_hash:
        raise CheckpointError(
            f"checkpoint {path} was written by a run with config hash {state['config_hash']}, but this run's "
            f"config hashes to {config_hash}; it was left untouched: use another --out (or "
            f"train.checkpoint_dir), or delete it to start afresh")
    return state


def save_weights(model: nn.Module, path) -> None:
    """`model`'s state dict as a safetensors file at `path` (on the CPU, written atomically)."""
    from safetensors.torch import save_file

    with atomic_path(path) as tmp:
        save_file({k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}, str(tmp))
