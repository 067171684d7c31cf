"""The run machinery every task shares (classification: `quadranet.classify`, detection: `quadranet.detection`).

- `folder`: `run_folder` (a complete run's metrics, or the folder locked and a `Session` handed to the task's
  loop) and `complete_metrics`.
- `session`: `Session` (device and autocast, clocks, energy, checkpoint restore and save, progress record, log,
  the finish step), with its `Progress` record and loss `Window`.
- `evaluation`: evaluating a finished run's model (`evaluate_model`, `check_eval_overrides`).
- `checkpoint`: atomic, `weights_only` checkpoints refused when they belong to another config, and the weights
  file. `lock`: the exclusive lock of a run folder (a second trainer fails at once, naming the holder's PID).
- `rng`: seeding and RNG states. `device`: device and autocast dtype of a config. `optim`: weight-decay groups.
- `logger`: log.jsonl and the progress bar. `accounting`: device-seconds, energy, peak memory, provenance.
  `distributed`: torchrun / DDP set-up from environment variables.
"""
from .checkpoint import LAST, WEIGHTS, CheckpointError, load_checkpoint, save_checkpoint, save_weights
from .device import amp_dtype, resolve_device
from .distributed import DistInfo
from .evaluation import check_eval_overrides, evaluate_model
from .folder import complete_metrics, run_folder
from .lock import RunLock, RunLockedError
from .optim import weight_decay_groups
from .rng import rng_state, seed_everything, set_rng_state
from .session import METRICS, NonFiniteLossError, Progress, Session, Window

__all__ = [
    "LAST", "METRICS", "WEIGHTS", "CheckpointError", "DistInfo", "NonFiniteLossError", "Progress", "RunLock",
    "RunLockedError", "Session", "Window", "amp_dtype", "check_eval_overrides", "complete_metrics", "evaluate_model",
    "load_checkpoint", "resolve_device", "rng_state", "run_folder", "save_checkpoint", "save_weights",
    "seed_everything", "set_rng_state", "weight_decay_groups",
]
