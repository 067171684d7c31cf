import os
import sys

import pytest


@pytest.fixture
def torchrun_shim(tmp_path):
    """A `torchrun` first on PATH that appends `record` (shell words, e.g. "$SLURM_JOB_ID $*") to
    tmp_path/torchrun.calls for each launch and hands over to the real one; returns the environment to run in."""
    def make(record: str = "$*") -> dict:
        shim = tmp_path / "bin" / "torchrun"
        shim.parent.mkdir(exist_ok=True)
        shim.write_text(f'#!/bin/sh\necho "{record}" >> {tmp_path}/torchrun.calls\n'
                        f'exec {sys.executable} -m torch.distributed.run "$@"\n')
        shim.chmod(0o755)
        return {**os.environ, "PATH": f"{shim.parent}:{os.environ['PATH']}", "HF_HUB_OFFLINE": "1"}
    return make
