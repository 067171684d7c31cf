"""The run-folder lock: a second trainer on a folder in use fails at once naming the holder; a stale lock is taken
over."""
import os
import subprocess
import sys

import pytest

from quadranet.run import METRICS, RunLock, RunLockedError
from quadranet.run.lock import LOCK


@pytest.mark.slow
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


def test_run_folder_in_use_is_refused_and_left_alone(run_toy, tmp_path):
    # flock locks belong to an open file, so a second open in this same process is refused as another trainer is
    with RunLock(tmp_path / "run"):
        with pytest.raises(RunLockedError, match=f"run folder {tmp_path / 'run'} is in use by process {os.getpid()}"):
            run_toy(tmp_path / "run")
        assert sorted(p.name for p in (tmp_path / "run").iterdir()) == [LOCK]  # nothing written


def test_stale_lock_of_a_dead_process_is_taken_over(run_toy, tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / LOCK).write_text("999999999\n")  # what a killed trainer leaves behind (no process has that PID)
    assert run_toy(out)["steps"] == 10
    assert "taking over the stale lock of process 999999999" in capsys.readouterr().err
    assert (out / METRICS).is_file() and not (out / LOCK).exists()  # a complete run drops its lock
