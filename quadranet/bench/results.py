"""Reading `quadranet bench` CSVs back (pandas only, so readers need not import torch)."""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Optional

import pandas as pd

REQUIRED = ("model", "variant", "mode", "input_size", "images_per_s")


def read_bench(files: Iterable, hardware: Optional[str] = None) -> pd.DataFrame:
    """The rows of bench CSVs `files`, each tagged with `source` (its file name less .csv) and, if given,
    `hardware`; an empty frame for no files. A missing file or one without the bench's columns is an error."""
    frames = []
    for f in map(Path, files):
        if not f.is_file():
            raise FileNotFoundError(f"bench CSV {str(f)!r} does not exist")
        df = pd.read_csv(f)
        missing = sorted(set(REQUIRED) - set(df.columns))
        if missing:
            raise ValueError(f"{f}: not a `quadranet bench` CSV (no column {missing})")
        frames.append(df.assign(source=f.stem, **({"hardware": hardware} if hardware is not None else {})))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
