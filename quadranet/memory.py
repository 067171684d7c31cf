"""Measure what autograd holds for backward, device-independently (works on the CPU)."""
from __future__ import annotations

from typing import Callable

import torch


def saved_tensor_bytes(fn: Callable[[], object]) -> tuple[int, object]:
    """Run `fn()` and return (bytes of distinct storages autograd saved for backward, fn's result).

    Counts every tensor packed by autograd (save_for_backward of custom Functions included), each
    storage once, so a tensor saved by several ops is not counted twice. Parameters count too.
    """
    sizes: dict = {}

    def pack(t: torch.Tensor):
        storage = t.untyped_storage()
        key = (t.device, storage.data_ptr())
        sizes[key] = max(sizes.get(key, 0), storage.nbytes())
        return t.detach()  # not `t`: a graph never run backward would keep itself alive through the hook

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return sum(sizes.values()), out
