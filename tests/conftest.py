import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing may wait on a model hub
# One thread per process: tests start training subprocesses, and OpenMP threads spinning on shared
# cores slow every process by orders of magnitude.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402
import torch  # noqa: E402


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
