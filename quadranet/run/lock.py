"""An exclusive lock per run folder, so that two trainers never write into the same folder.

`fcntl.flock` on `<folder>/.lock`, which holds the holder's PID: the kernel releases the lock when its process
ends, however it ends, so the lock of a killed run is stale as soon as that run is gone and the next trainer
simply takes it over (and says so). A second trainer on a folder still in use fails at once, naming the PID.
"""
from __future__ import annotations

import fcntl
import os
import sys
from pathlib import Path
from typing import Optional

LOCK = ".lock"


class RunLockedError(RuntimeError):
    """The run folder is held by another live process."""


class RunLock:
    """Exclusive lock on run folder `folder` (created if missing); a context manager."""

    def __init__(self, folder):
        self.path = Path(folder) / LOCK
        self._fd: Optional[int] = None

    def holder(self) -> Optional[int]:
        """PID written in the lock file, if any."""
        try:
            return int(self.path.read_text().strip() or 0) or None
        except (OSError, ValueError):
            return None

    def acquire(self) -> "RunLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise RunLockedError(f"run folder {self.path.parent} is in use by process {self.holder()} (lock "
                                 f"{self.path}); wait for it to finish or stop it, then run the same command "
                                 f"again") from None
        stale = self.holder()
        if stale is not None and stale != os.getpid():
            print(f"run folder {self.path.parent}: taking over the stale lock of process {stale} (no longer "
                  f"running)", file=sys.stderr)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        os.fsync(fd)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
