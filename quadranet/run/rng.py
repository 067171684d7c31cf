"""Seeding and the RNG states a checkpoint carries (Python, NumPy, torch CPU and CUDA), so a resumed run draws
the same numbers as an uninterrupted one."""
from __future__ import annotations

import random

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def rng_state() -> dict:
    """RNG states as tensors (a weights_only checkpoint holds nothing else)."""
    _, keys, pos, *_ = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "numpy": torch.from_numpy(np.append(keys, pos).astype(np.int64)),
             "python": torch.tensor(random.getstate()[1], dtype=torch.int64)}
    if torch.cuda.is_available():
        state["cuda"] = torch.stack(torch.cuda.get_rng_state_all())
    return state


def set_rng_state(state: dict) -> None:
    """Restore the states `rng_state` returned."""
    torch.set_rng_state(state["torch"])
    np_state = state["numpy"].numpy()
    np.random.set_state(("MT19937", np_state[:-1].astype(np.uint32), int(np_state[-1]), 0, 0.0))
    random.setstate((3, tuple(int(v) for v in state["python"].tolist()), None))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(list(state["cuda"]))
