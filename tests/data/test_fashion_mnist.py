"""Fashion-MNIST: the real Debian files, and every option on a tiny idx fixture written here."""
import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from quadranet.data.fashion_mnist import (CLASSES, DEFAULT_ROOT, ENV_VAR, FashionMNIST, carve_val,
                                          fashion_mnist_root, load_fashion_mnist)
from quadranet.data.idx import IdxFormatError
from quadranet.data.shifts import make_shift

HAVE_DEBIAN = all((Path(DEFAULT_ROOT) / f"{p}-{k}-idx{d}-ubyte.gz").is_file()
                  for p in ("train", "t10k") for k, d in (("images", 3), ("labels", 1)))
needs_debian = pytest.mark.skipif(not HAVE_DEBIAN, reason="apt-get install dataset-fashion-mnist")

PER_CLASS_TRAIN, PER_CLASS_TEST = 12, 3


def write_idx(path: Path, arr: np.ndarray, compress: bool = True):
    data = bytes([0, 0, 0x08, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(data) if compress else data)


def make_root(root: Path, per_class: int = PER_CLASS_TRAIN, per_class_test: int = PER_CLASS_TEST,
              compress: bool = True) -> Path:
    """Idx files like Debian's: random images, labels 0..9 shuffled; pixel [0, 0] holds the item's position
    in its file and pixel [0, 1] its label, so tests can trace what was selected."""
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    for prefix, k in (("train", per_class), ("t10k", per_class_test)):
        labels = rng.permutation(np.repeat(np.arange(10), k)).astype(np.uint8)
        images = rng.integers(0, 256, size=(len(labels), 28, 28), dtype=np.uint8)
        images[:, 0, 0], images[:, 0, 1] = np.arange(len(labels)), labels
        write_idx(root / f"{prefix}-images-idx3-ubyte", images, compress)
        write_idx(root / f"{prefix}-labels-idx1-ubyte", labels, compress)
        if compress:
            for f in ("images-idx3-ubyte", "labels-idx1-ubyte"):
                (root / f"{prefix}-{f}").rename(root / f"{prefix}-{f}.gz")
    return root


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return make_root(tmp_path_factory.mktemp("fmnist"))


@pytest.fixture(scope="module")
def real():
    if not HAVE_DEBIAN:
        pytest.skip("apt-get install dataset-fashion-mnist")
    return {s: load_fashion_mnist(s, DEFAULT_ROOT) for s in ("train", "test")}


def raw_label(ds: FashionMNIST, images: np.ndarray) -> np.ndarray:
    return images[ds.indices, 0, 1].astype(np.int64)


# ---- the real Debian files ----------------------------------------------------------------------------

@needs_debian
def test_real_files(real):
    (xtr, ytr), (xte, yte) = real["train"], real["test"]
    assert xtr.shape == (60000, 28, 28) and xte.shape == (10000, 28, 28)
    assert xtr.dtype == xte.dtype == np.uint8 and ytr.dtype == yte.dtype == np.int64
    assert ytr.min() == 0 and ytr.max() == 9
    assert np.bincount(ytr).tolist() == [6000] * 10 and np.bincount(yte).tolist() == [1000] * 10
    assert xtr.max() == 255 and xtr.min() == 0
    assert not xtr.flags.writeable and not ytr.flags.writeable
    assert load_fashion_mnist("train", DEFAULT_ROOT)[0] is xtr  # cached per process and root


@needs_debian
def test_real_default_root(real, monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    assert fashion_mnist_root() == Path(DEFAULT_ROOT)
    assert load_fashion_mnist("test")[1] is real["test"][1]


@needs_debian
def test_real_val_carve(real):
    labels = real["train"][1]
    val = carve_val(labels, 5000, seed=0)
    assert val.sum() == 5000 and np.bincount(labels[val]).tolist() == [500] * 10
    ds_val = FashionMNIST("val", val_size=5000, root=DEFAULT_ROOT)
    ds_train = FashionMNIST("train", val_size=5000, root=DEFAULT_ROOT)
    assert len(ds_val) == 5000 and len(ds_train) == 55000
    np.testing.assert_array_equal(ds_val.indices, np.flatnonzero(val))
    assert np.union1d(ds_val.indices, ds_train.indices).size == 60000
    assert ds_train.data.shape == (55000, 1, 28, 28) and 0 <= ds_train.data.min() and ds_train.data.max() <= 1
    assert len(FashionMNIST("test", root=DEFAULT_ROOT)) == 10000


# ---- where the files come from -----------------------------------------------------------------------

def test_missing_root_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    for call in (lambda: load_fashion_mnist("train", tmp_path / "nowhere"),
                 lambda: FashionMNIST("test", root=tmp_path)):
        with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist") as info:
            call()
        assert ENV_VAR in str(info.value)
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "also-nowhere"))
    with pytest.raises(FileNotFoundError, match="also-nowhere"):
        load_fashion_mnist("train")


def test_env_var_root(root, monkeypatch):
    monkeypatch.setenv(ENV_VAR, str(root))
    assert fashion_mnist_root() == root
    assert fashion_mnist_root("/elsewhere") == Path("/elsewhere")  # explicit root wins
    images, labels = load_fashion_mnist("train")
    assert images.shape == (10 * PER_CLASS_TRAIN, 28, 28) and np.bincount(labels).tolist() == [PER_CLASS_TRAIN] * 10
    assert len(FashionMNIST("test")) == 10 * PER_CLASS_TEST
    monkeypatch.setenv(ENV_VAR, "")  # empty means unset
    assert fashion_mnist_root() == Path(DEFAULT_ROOT)


def test_plain_idx_files(tmp_path, root):
    plain = make_root(tmp_path / "plain", compress=False)
    a, b = load_fashion_mnist("train", plain), load_fashion_mnist("train", root)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])


def test_bad_files(tmp_path):
    bad = make_root(tmp_path / "bad")
    write_idx(bad / "t10k-labels-idx1-ubyte.gz", np.full(10 * PER_CLASS_TEST, 10, np.uint8))
    with pytest.raises(IdxFormatError, match="0..9"):
        load_fashion_mnist("test", bad)
    write_idx(bad / "t10k-labels-idx1-ubyte.gz", np.zeros(5, np.uint8))
    with pytest.raises(IdxFormatError, match="one per image"):
        load_fashion_mnist("test", bad)
    write_idx(bad / "train-images-idx3-ubyte.gz", np.zeros((10 * PER_CLASS_TRAIN, 32, 32), np.uint8))
    with pytest.raises(IdxFormatError, match=r"\[N, 28, 28\]"):
        load_fashion_mnist("train", bad)
    (bad / "t10k-images-idx3-ubyte.gz").write_bytes(b"\x1f\x8b not gzip")
    with pytest.raises(IdxFormatError, match="t10k-images"):
        load_fashion_mnist("test", bad)


# ---- selection ---------------------------------------------------------------------------------------

def test_defaults(root):
    images, labels = load_fashion_mnist("train", root)
    ds = FashionMNIST(root=root)
    assert len(ds) == len(labels) and ds.num_classes == 10 and ds.class_names == list(CLASSES)
    x, y = ds[5]
    assert x.shape == (1, 28, 28) and x.dtype == torch.float32 and isinstance(y, int) and y == labels[5]
    torch.testing.assert_close(x[0], torch.tensor(images[5]).float() / 255)
    assert ds.targets.dtype == torch.int64


def test_class_subset_relabels(root):
    images, _ = load_fashion_mnist("train", root)
    ds = FashionMNIST(root=root, classes=[7, 2, 9])
    assert ds.num_classes == 3 and ds.class_names == ["Sneaker", "Pullover", "Ankle boot"]
    assert len(ds) == 3 * PER_CLASS_TRAIN and sorted(set(ds.targets.tolist())) == [0, 1, 2]
    np.testing.assert_array_equal(np.array([7, 2, 9])[ds.targets.numpy()], raw_label(ds, images))


def test_per_class_and_limit(root):
    images, _ = load_fashion_mnist("train", root)
    ds = FashionMNIST(root=root, per_class=5, classes=[1, 3])
    assert np.bincount(ds.targets.numpy()).tolist() == [5, 5]
    assert len(FashionMNIST(root=root, per_class=1000)) == 10 * PER_CLASS_TRAIN  # more than there is
    a, b, c = (FashionMNIST(root=root, limit=17, seed=s) for s in (0, 0, 1))
    assert len(a) == 17 and np.array_equal(a.indices, b.indices) and not np.array_equal(a.indices, c.indices)
    assert np.all(np.diff(a.indices) > 0)  # file order kept
    both = FashionMNIST(root=root, per_class=4, limit=10)
    assert len(both) == 10 and np.bincount(raw_label(both, images), minlength=10).max() <= 4


def test_carve_val_stratified_and_seeded():
    labels = np.repeat(np.arange(10), [10, 20, 30, 40, 50, 60, 70, 80, 90, 100])  # 550, unbalanced
    val = carve_val(labels, 55, seed=3)
    assert val.dtype == bool and val.sum() == 55
    assert np.bincount(labels[val], minlength=10).tolist() == list(range(1, 11))  # 10% of each class
    odd = carve_val(labels, 7, seed=0)  # quotas 0.13..1.3 -> largest remainders win, total exact
    assert odd.sum() == 7 and np.all(np.bincount(labels[odd], minlength=10) <= np.ceil(np.bincount(labels) * 7 / 550))
    assert np.array_equal(carve_val(labels, 55, seed=3), val)
    assert not np.array_equal(carve_val(labels, 55, seed=4), val)
    for bad in (0, 550, -1, 2.5, True):
        with pytest.raises(ValueError, match="val_size") as info:
            carve_val(labels, bad, seed=0)
        assert repr(bad) in str(info.value)


def test_val_split(root):
    _, labels = load_fashion_mnist("train", root)
    kw = dict(root=root, val_size=30, split_seed=1)
    train, val = FashionMNIST("train", **kw), FashionMNIST("val", **kw)
    assert len(val) == 30 and len(train) == 10 * PER_CLASS_TRAIN - 30
    assert np.intersect1d(train.indices, val.indices).size == 0
    assert np.union1d(train.indices, val.indices).size == len(labels)
    assert np.bincount(labels[val.indices]).tolist() == [3] * 10  # stratified
    again = FashionMNIST("val", **kw)
    other = FashionMNIST("val", root=root, val_size=30, split_seed=2)
    assert np.array_equal(again.indices, val.indices) and not np.array_equal(other.indices, val.indices)
    assert np.array_equal(FashionMNIST("val", seed=9, **kw).indices, val.indices)  # `seed` is not the split
    sub = FashionMNIST("val", classes=[4, 0], **kw)  # carved before the class subset: same val images
    assert set(sub.indices) == set(val.indices[np.isin(labels[val.indices], [4, 0])])
    assert len(FashionMNIST("test", root=root, val_size=30)) == 10 * PER_CLASS_TEST  # test ignores val_size


# ---- tensors -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("resolution,channels", [(28, 1), (28, 3), (14, 1), (32, 3), (64, 1)])
def test_shapes(root, resolution, channels):
    ds = FashionMNIST("test", root=root, resolution=resolution, channels=channels)
    n, shape = 10 * PER_CLASS_TEST, (channels, resolution, resolution)
    assert ds[0][0].shape == shape
    x, y = ds.batch([0, 3, 4])
    assert x.shape == (3, *shape) and y.shape == (3,) and x.dtype == torch.float32
    assert ds.tensors()[0].shape == (n, *shape)
    if channels == 3:
        assert torch.equal(x[:, 0], x[:, 1]) and torch.equal(x[:, 0], x[:, 2])  # grey replicated
    xb, yb = next(iter(DataLoader(ds, batch_size=8)))  # via __getitems__
    assert xb.shape == (8, *shape) and torch.equal(xb, ds.batch(range(8))[0]) and torch.equal(yb, ds.targets[:8])
    assert 0 <= ds.data.min() and ds.data.max() <= 1


def test_resize_matches_interpolate(root):
    images, _ = load_fashion_mnist("test", root)
    x = torch.tensor(images).float().div(255).unsqueeze(1)
    up, down = (FashionMNIST("test", root=root, resolution=r).data for r in (56, 14))
    torch.testing.assert_close(up, F.interpolate(x, size=56, mode="bilinear", align_corners=False))
    torch.testing.assert_close(down, F.interpolate(x, size=14, mode="bilinear", align_corners=False, antialias=True))


@pytest.mark.parametrize("channels,mean,std", [(1, [0.5], [0.25]), (3, (0.1, 0.2, 0.3), (0.5, 1.0, 2.0)),
                                               (3, 0.5, 0.5), (1, torch.tensor([0.3]), np.array([0.2]))])
def test_normalisation(root, channels, mean, std):
    raw = FashionMNIST("test", root=root, channels=channels).tensors()[0]
    ds = FashionMNIST("test", root=root, channels=channels, mean=mean, std=std)
    m = torch.as_tensor(mean, dtype=torch.float32).flatten().expand(channels).view(1, -1, 1, 1)
    s = torch.as_tensor(std, dtype=torch.float32).flatten().expand(channels).view(1, -1, 1, 1)
    torch.testing.assert_close(ds.tensors()[0], (raw - m) / s)
    torch.testing.assert_close(ds[2][0], ((raw - m) / s)[2])
    torch.testing.assert_close(ds.batch([1, 2])[0], ((raw - m) / s)[[1, 2]])


def test_shift_before_resize(root):
    images, _ = load_fashion_mnist("test", root)
    x = torch.tensor(images).float().div(255).unsqueeze(1)
    shift = make_shift("gamma", 1.0)
    ds = FashionMNIST("test", root=root, resolution=56, shift="gamma", shift_strength=1.0)
    resize = lambda t: F.interpolate(t, size=56, mode="bilinear", align_corners=False)  # noqa: E731
    torch.testing.assert_close(ds.data, resize(shift(x)))
    assert (ds.data - shift(resize(x))).abs().max() > 1e-3  # the other order differs for a nonlinear shift
    assert ds.shift == shift
    same = FashionMNIST("test", root=root, resolution=56, shift=shift)  # a callable works too
    assert torch.equal(same.data, ds.data)
    normed = FashionMNIST("test", root=root, shift=lambda t: 1 - t, mean=[0.5], std=[0.5])  # shift before norm
    torch.testing.assert_close(normed.tensors()[0], ((1 - x) - 0.5) / 0.5)


BAD_ARGS = [
    (dict(split="validation"), "'validation'"),
    (dict(resolution=0), "resolution must be a positive integer, got 0"),
    (dict(resolution=27.5), "27.5"),
    (dict(channels=2), "channels must be 1 or 3, got 2"),
    (dict(channels=True), "got True"),
    (dict(channels=3.0), "got 3.0"),
    (dict(classes=[1, 1]), r"\[1, 1\]"),
    (dict(classes=[10]), r"\[10\]"),
    (dict(classes=[]), r"\[\]"),
    (dict(per_class=0), "per_class must be a positive integer or None, got 0"),
    (dict(limit=-3), "limit must be a positive integer or None, got -3"),
    (dict(val_size=-1), "val_size must be a non-negative integer, got -1"),
    (dict(val_size=0.5), "got 0.5"),
    (dict(split="val"), "needs val_size > 0"),
    (dict(val_size=120), "val_size must lie in 1..119, got 120"),
    (dict(mean=[0.5]), "both mean and std"),
    (dict(mean=[0.1, 0.2], std=[1.0, 1.0], channels=3), r"mean must have 1 or 3 values.*\[0.1, 0.2\]"),
    (dict(mean=0.5, std=0.0), "std must be positive, got 0.0"),
    (dict(shift="gamma"), "'gamma' given by name needs shift_strength"),
    (dict(shift="blur", shift_strength=0.5), "unknown shift 'blur'"),
    (dict(shift="gamma", shift_strength=2), r"strength 2 is outside \[0, 1\]"),
    (dict(shift=3), "shift must be a shift name.*got 3"),
]


@pytest.mark.parametrize("kwargs,message", BAD_ARGS, ids=[str(k) for k, _ in BAD_ARGS])
def test_bad_arguments(root, kwargs, message):
    with pytest.raises(ValueError, match=message):
        FashionMNIST(**{"root": root, **kwargs})


def test_bad_file_split(root):
    with pytest.raises(ValueError, match="'val'"):
        load_fashion_mnist("val", root)
