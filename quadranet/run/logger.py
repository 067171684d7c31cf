"""The run log: `log.jsonl` (one JSON object per logging step, epoch and evaluation, rank 0) and, per
`train.progress`, a tqdm bar or plain lines on stderr."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from .. import atomic


class Logger:
    """Appends records to `<out>/log.jsonl` and to `progress.log` (which checkpoints carry)."""

    def __init__(self, out: Path, progress, mode: str, enabled: bool):
        self.path, self.progress, self.enabled = out / "log.jsonl", progress, enabled
        if mode == "auto":
            mode = "bar" if sys.stderr.isatty() else "lines"
        self.mode, self.bar = mode, None
        if enabled:  # rewrite what the checkpoint knows, dropping lines of work that will be redone
            atomic.write_text(self.path, "".join(json.dumps(r) + "\n" for r in progress.log))

    def open_bar(self, total: int, initial: int, desc: str) -> None:
        if self.enabled and self.mode == "bar":
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=initial, desc=desc, dynamic_ncols=True, leave=False)

    def close_bar(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def tick(self) -> None:
        if self.bar is not None:
            self.bar.update(1)

    def write(self, record: dict) -> None:
        if not self.enabled:
            return
        record = {k: (round(v, 6) if isinstance(v, float) else v) for k, v in record.items()}
        self.progress.log.append(record)
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        if self.mode == "lines" or (self.mode == "bar" and record["event"] != "step"):
            text = " ".join(f"{k}={v}" for k, v in record.items())
            (self.bar.write if self.bar is not None else lambda s: print(s, file=sys.stderr, flush=True))(text)
