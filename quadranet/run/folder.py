"""A run folder: its metrics if the run in it is complete, else the folder locked and a `Session` handed to the
task's loop."""
from __future__ import annotations

import contextlib
import json
import os
import sys
from pathlib import Path
from typing import Callable, Optional

import torch

from .checkpoint import CheckpointError
from .distributed import cleanup, init_distributed
from .lock import RunLock
from .session import METRICS, Session


def complete_metrics(out: Path, chash: str) -> Optional[dict]:
    """The metrics of the complete run in `out` (None if it is not complete); refuses one of another config."""
    metrics_path = Path(out) / METRICS
    if not metrics_path.exists():
        return None
    done = json.loads(metrics_path.read_text())
    if done.get("config_hash") == chash:
        print(f"run {out} is complete (config {chash}); nothing to do", file=sys.stderr)
        return done
    raise CheckpointError(
        f"{metrics_path} holds a finished run with config hash {done.get('config_hash')}, not {chash}; "
        f"use another --out or delete that folder")


def run_folder(cfg, out, chash: str, body: Callable[[Session], dict], command: Optional[list] = None) -> dict:
    """The metrics of run `cfg` (config hash `chash`) in folder `out`: those already there if it is complete,
    else what `body(session)` returns. The folder is locked meanwhile (rank 0 holds the lock for a torchrun
    job), and `body` runs inside the process group, if any."""
    out = Path(out)
    done = complete_metrics(out, chash)
    if done is not None:
        return done
    lock = RunLock(out) if int(os.environ.get("RANK", "0")) == 0 else None
    with lock or contextlib.nullcontext():
        done = complete_metrics(out, chash)  # finished by a trainer that held the folder until just now
        if done is not None:
            return done
        info = init_distributed("cuda" if cfg.train.device != "cpu" and torch.cuda.is_available() else "cpu")
        try:
            metrics = body(Session(cfg, out, chash, info, command))
        finally:
            cleanup(info)
        if lock is not None:  # a complete run needs no lock; any later trainer re-checks metrics.json first
            lock.path.unlink(missing_ok=True)
        return metrics
