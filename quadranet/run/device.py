"""Where a run computes: the device of a device name, and the autocast dtype of an AMP setting."""
from __future__ import annotations

from typing import Optional

import torch

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "none": None}


def resolve_device(want: str = "auto", local_rank: int = 0, key: str = "device") -> torch.device:
    """Device name `want` ('auto', 'cpu', 'cuda' or 'cuda:N') as a device: 'auto' is the GPU where there is one,
    and a bare 'cuda' this process's GPU under torchrun (`local_rank`). Errors name config key `key`."""
    if want == "auto":
        want = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(want)
    except (RuntimeError, TypeError):
        raise ValueError(f"{key}={want!r} is not a device; expected 'auto', 'cpu', 'cuda' or 'cuda:N'") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"{key}={want!r} but no CUDA device is available; expected 'cpu' or 'auto'")
        return device if device.index is not None else torch.device("cuda", local_rank)
    return device


def amp_dtype(amp: str, device: torch.device) -> Optional[torch.dtype]:
    """`train.amp` as an autocast dtype (None: full precision); 'auto' is bf16 on GPU, none on CPU."""
    if amp == "auto":
        return torch.bfloat16 if device.type == "cuda" else None
    if amp not in AMP_DTYPES:
        raise ValueError(f"train.amp={amp!r} is not allowed; expected 'auto' or one of {list(AMP_DTYPES)}")
    return AMP_DTYPES[amp]
