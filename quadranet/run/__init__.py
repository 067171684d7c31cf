"""The run machinery every task shares (classification: `quadranet.classify`, detection: `quadranet.detection`).

- `session`: `run_folder` (a complete run, or the folder locked and a `Session` handed to the task's loop) and
  `Session`: device and autocast, clocks, energy, checkpoint restore and save, progress record, log, seeding
  and RNG states, the finish step; `evaluate_model` for a finished run's weights.
- `lock`: the exclusive lock of a run folder (a second trainer fails at once, naming the holder's PID).
- `logger`: log.jsonl and the progress bar. `checkpoint`: atomic, `weights_only` checkpoints refused when they
  belong to another config. `accounting`: device-seconds, energy, peak memory, provenance. `distributed`:
  torchrun / DDP set-up from environment variables.
"""
__all__ = ["accounting", "checkpoint", "distributed", "lock", "logger", "session"]
