"""idx reader: round trips of generated files and one IdxFormatError per malformed case."""
import gzip
import struct

import numpy as np
import pytest

from quadranet.data.idx import IDX_DTYPES, IdxFormatError, read_idx

CODES = {np.dtype(v): k for k, v in IDX_DTYPES.items()}


def idx_bytes(arr: np.ndarray) -> bytes:
    dtype = np.dtype(arr.dtype).newbyteorder(">") if arr.dtype.itemsize > 1 else arr.dtype
    header = bytes([0, 0, CODES[dtype], arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    return header + arr.astype(dtype).tobytes()


def write(path, data: bytes, compress: bool):
    path.write_bytes(gzip.compress(data) if compress else data)
    return path


ARRAYS = {
    "u1": np.random.default_rng(0).integers(0, 256, size=(5, 4, 3), dtype=np.uint8),
    ">i4": np.array([[-(2 ** 31), -1, 0], [1, 70000, 2 ** 31 - 1]], dtype=np.int32),
    ">f4": np.linspace(-1, 1, 7, dtype=np.float32),
    "labels": np.arange(10, dtype=np.uint8),
}


@pytest.mark.parametrize("compress", [False, True], ids=["plain", "gz"])
@pytest.mark.parametrize("name", sorted(ARRAYS))
def test_round_trip(tmp_path, name, compress):
    arr = ARRAYS[name]
    out = read_idx(write(tmp_path / "a.idx", idx_bytes(arr), compress))
    assert out.shape == arr.shape
    assert out.dtype == arr.dtype.newbyteorder("=")  # native byte order
    np.testing.assert_array_equal(out, arr)
    assert not out.flags.writeable


def test_empty_dimension(tmp_path):
    out = read_idx(write(tmp_path / "e.idx", idx_bytes(np.zeros((0, 28, 28), np.uint8)), False))
    assert out.shape == (0, 28, 28)


GOOD = idx_bytes(ARRAYS["u1"])
MALFORMED = {
    "bad magic (nonzero first bytes)": (b"\x01\x00" + GOOD[2:], "bad idx magic"),
    "unknown type code": (GOOD[:2] + b"\x07" + GOOD[3:], "bad idx magic"),
    "zero dimensions": (GOOD[:3] + b"\x00" + GOOD[4:], "bad idx magic"),
    "shorter than the magic": (b"\x00\x00", "bad idx magic"),
    "empty file": (b"", "bad idx magic"),
    "truncated header": (GOOD[:10], "truncated header"),
    "missing data": (GOOD[:-1], "data bytes"),
    "trailing data": (GOOD + b"\x00", "data bytes"),
    "huge header size": (GOOD[:4] + struct.pack(">3I", 2 ** 32 - 1, 2 ** 32 - 1, 2 ** 32 - 1) + GOOD[16:],
                         "data bytes"),
}


@pytest.mark.parametrize("compress", [False, True], ids=["plain", "gz"])
@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_raises_naming_file(tmp_path, case, compress):
    data, message = MALFORMED[case]
    path = write(tmp_path / "broken-idx3-ubyte", data, compress)
    with pytest.raises(IdxFormatError, match=message) as info:
        read_idx(path)
    assert str(path) in str(info.value)
    assert isinstance(info.value, ValueError)


CORRUPT_GZIP = {
    "truncated stream": lambda z: z[: len(z) // 2],
    "bad crc": lambda z: z[:-8] + bytes([z[-8] ^ 0xFF]) + z[-7:],
    "garbled deflate data": lambda z: z[:10] + b"\xff" * (len(z) - 18) + z[-8:],
    "gzip magic only": lambda z: z[:2],
}


@pytest.mark.parametrize("case", sorted(CORRUPT_GZIP))
def test_corrupt_gzip(tmp_path, case):
    path = tmp_path / "x.gz"
    path.write_bytes(CORRUPT_GZIP[case](gzip.compress(GOOD)))
    with pytest.raises(IdxFormatError, match="corrupt gzip stream") as info:
        read_idx(path)
    assert str(path) in str(info.value)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_idx(tmp_path / "nope.gz")
