"""The run-folder lock: a second trainer on a folder in use fails at once naming the holder; a stale lock is taken
over."""
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from quadranet.run.lock import LOCK, RunLock, RunLockedError

TINY = ["model.arch=test_convnext", "data.resolution=32", "data.train_per_class=8", "data.eval_limit=64",
        "data.batch_size=16", "train.progress=lines"]


def train_cmd(out, *overrides):
    return [sys.executable, "-m", "quadranet", "train", "--out", str(out), *TINY, *overrides]


def test_second_lock_on_a_held_folder_fails_naming_the_holder(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from quadranet.run.lock import RunLock; "
                               f"RunLock({str(tmp_path)!r}).acquire(); print('held', flush=True); time.sleep(60)"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RunLockedError, match=f"in use by process {holder.pid}"):
            RunLock(tmp_path).acquire()
    finally:
        holder.kill()
        holder.wait()
    with RunLock(tmp_path) as lock:  # the holder is gone: its lock is stale and taken over
        assert lock.holder() == os.getpid()


def test_two_trainers_on_one_folder(tmp_path):
    out = tmp_path / "run"
    first = subprocess.Popen(train_cmd(out, "train.epochs=200"), stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while not (out / "log.jsonl").exists() and time.time() < deadline:  # the first trainer is under way
            assert first.poll() is None, first.stderr.read()[-2000:]
            time.sleep(0.2)
        second = subprocess.run(train_cmd(out, "train.epochs=200"), capture_output=True, text=True, timeout=120)
        assert second.returncode == 2
        assert f"is in use by process {first.pid}" in second.stderr, second.stderr[-2000:]
        assert first.poll() is None  # the first one runs on, undisturbed
    finally:
        first.kill()
        first.wait()


def test_stale_lock_of_a_dead_process_is_taken_over(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    out = tmp_path / "run"
    out.mkdir()
    (out / LOCK).write_text(f"{dead.pid}\n")  # what a killed trainer leaves behind
    proc = subprocess.run(train_cmd(out, "train.epochs=1"), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"taking over the stale lock of process {dead.pid}" in proc.stderr
    assert (out / "metrics.json").is_file() and not (out / LOCK).exists()  # a complete run drops its lock
