"""Reader for the idx file format (MNIST / Fashion-MNIST), plain or gzip-compressed."""
from __future__ import annotations

import gzip
import math
import struct
import zlib
from pathlib import Path
from typing import Union

import numpy as np

# idx type code (third magic byte) -> big-endian numpy dtype
IDX_DTYPES = {
    0x08: np.dtype("u1"), 0x09: np.dtype("i1"), 0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8"),
}


class IdxFormatError(ValueError):
    """A file is not a valid idx file (bad gzip stream, magic number or size)."""


def read_idx(path: Union[str, Path]) -> np.ndarray:
    """Parse an idx file (gzip-compressed when it starts with the gzip magic) into a read-only array.

    The magic number is 0x00 0x00 <type code> <ndim>, followed by ndim big-endian uint32 sizes and
    exactly prod(sizes) items; anything else raises IdxFormatError naming the file.
    """
    path = Path(path)
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as e:
            raise IdxFormatError(f"{path}: corrupt gzip stream ({e})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in IDX_DTYPES or raw[3] == 0:
        raise IdxFormatError(
            f"{path}: bad idx magic number 0x{raw[:4].hex()} (expected 0x0000<type><ndim> with type in "
            f"{sorted(hex(c) for c in IDX_DTYPES)} and ndim >= 1)")
    dtype, ndim = IDX_DTYPES[raw[2]], raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise IdxFormatError(f"{path}: truncated header ({len(raw)} bytes, need {header} for {ndim} dimensions)")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    expected = math.prod(dims) * dtype.itemsize  # exact (no int64 overflow on a corrupt header)
    if len(raw) - header != expected:
        raise IdxFormatError(
            f"{path}: holds {len(raw) - header} data bytes but its header (shape {dims}, {dtype}) needs {expected}")
    arr = np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims)
    if dtype.byteorder == ">":
        arr = arr.astype(dtype.newbyteorder("="))
        arr.setflags(write=False)
    return arr
