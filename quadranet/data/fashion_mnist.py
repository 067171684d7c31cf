"""Fashion-MNIST from the idx files of Debian's `dataset-fashion-mnist` package, as a precomputed tensor dataset."""
from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Callable, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from .idx import IdxFormatError, read_idx
from .shifts import SHIFTS, make_shift

DEFAULT_ROOT = "/usr/share/datasets/fashion-mnist"
ENV_VAR = "QUADRANET_FASHION_MNIST"
FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
         "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
SPLITS = ("train", "val", "test")


def fashion_mnist_root(root: Union[str, Path, None] = None) -> Path:
    """`root`, else $QUADRANET_FASHION_MNIST, else /usr/share/datasets/fashion-mnist."""
    return Path(root if root is not None else os.environ.get(ENV_VAR) or DEFAULT_ROOT)


def _find(root: Path, name: str) -> Path:
    for candidate in (root / f"{name}.gz", root / name):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        f"Fashion-MNIST file {name}(.gz) not found in {root}; install the Debian package with "
        f"`apt-get install dataset-fashion-mnist` (files land in {DEFAULT_ROOT}) or set {ENV_VAR} "
        f"to a folder holding the idx files")


def check_fashion_mnist(root: Union[str, Path, None] = None) -> None:
    """Raise the reader's FileNotFoundError (with the install command) unless all four idx files are there."""
    for names in FILES.values():
        for name in names:
            _find(fashion_mnist_root(root), name)


def load_fashion_mnist(split: str = "train", root: Union[str, Path, None] = None) -> Tuple[np.ndarray, np.ndarray]:
    """(images uint8 [N, 28, 28], labels int64 [N]) of the file split 'train' (60000) or 'test' (10000).

    Read-only arrays, cached per process and root.
    """
    if split not in FILES:
        raise ValueError(f"unknown Fashion-MNIST file split {split!r}; expected 'train' or 'test'")
    return _load_cached(str(fashion_mnist_root(root).resolve()), split)


@functools.lru_cache(maxsize=None)
def _load_cached(root: str, split: str) -> Tuple[np.ndarray, np.ndarray]:
    image_file, label_file = (_find(Path(root), name) for name in FILES[split])
    images, labels = read_idx(image_file), read_idx(label_file)
    if images.ndim != 3 or images.shape[1:] != (28, 28) or images.dtype != np.uint8:
        raise IdxFormatError(f"{image_file}: expected uint8 images of shape [N, 28, 28], "
                             f"got {images.dtype} {images.shape}")
    if labels.ndim != 1 or labels.shape[0] != images.shape[0] or labels.dtype.kind not in "iu":
        raise IdxFormatError(f"{label_file}: expected {images.shape[0]} integer labels (one per image), "
                             f"got {labels.dtype} {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise IdxFormatError(f"{label_file}: labels must lie in 0..9, found {int(labels.min())}..{int(labels.max())}")
    labels = labels.astype(np.int64)
    labels.setflags(write=False)
    return images, labels


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _positive_int(name: str, value, allow_none: bool = True):
    if value is None and allow_none:
        return None
    if not _is_int(value) or value <= 0:
        raise ValueError(f"{name} must be a positive integer{' or None' if allow_none else ''}, got {value!r}")
    return int(value)


def carve_val(labels: np.ndarray, val_size: int, seed: int) -> np.ndarray:
    """Boolean mask of a class-stratified, seeded validation subset of `val_size` items of `labels`."""
    n = len(labels)
    if not _is_int(val_size) or not 0 < val_size < n:
        raise ValueError(f"val_size must lie in 1..{n - 1}, got {val_size!r}")
    counts = np.bincount(labels, minlength=10)
    quota = counts * val_size / n
    take = np.floor(quota).astype(np.int64)
    extra = np.argsort(-(quota - take), kind="stable")[: val_size - take.sum()]
    take[extra] += 1
    rng = np.random.default_rng(seed)
    mask = np.zeros(n, dtype=bool)
    for c in range(len(counts)):
        members = np.flatnonzero(labels == c)
        mask[rng.permutation(members)[: take[c]]] = True
    return mask


class FashionMNIST(Dataset):
    """Fashion-MNIST, selected, shifted and resized once into one float tensor held in memory.

    split: 'train' | 'test' | 'val' ('val' is `val_size` images carved from the whole train file, stratified
    over all 10 classes with `split_seed`, before `classes` selects; with val_size > 0 'train' excludes them;
    val_size=0 keeps all 60000 in 'train'; 'test' ignores val_size).
    resolution: output side (bilinear resize of the 28x28 images, antialiased when shrinking).
    channels: 1, or 3 (grey replicated). mean/std: per-channel normalisation (e.g. a timm model's
    pretrained_cfg['mean'/'std']), length 1 or `channels`; None leaves images in [0, 1].
    classes: class ids to keep, relabelled by their position in the list (0..k-1).
    per_class / limit: keep at most that many images per class / in total, chosen with `seed`.
    shift: a shift name (see shifts.SHIFTS, with `shift_strength`) or a callable on [0, 1] tensors, applied
    to the 28x28 images before resizing and normalisation.
    Items are (image [channels, resolution, resolution] float32, label int); `batch(indices)` and
    `tensors()` give stacked tensors without per-item overhead.
    """

    def __init__(self, split: str = "train", *, resolution: int = 28, channels: int = 1,
                 mean: Optional[Sequence[float]] = None, std: Optional[Sequence[float]] = None,
                 classes: Optional[Sequence[int]] = None, per_class: Optional[int] = None,
                 limit: Optional[int] = None, seed: int = 0, val_size: int = 0, split_seed: int = 0,
                 shift: Union[str, Callable[[torch.Tensor], torch.Tensor], None] = None,
                 shift_strength: Optional[float] = None, root: Union[str, Path, None] = None):
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
        self.resolution = _positive_int("resolution", resolution, allow_none=False)
        if not _is_int(channels) or channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {channels!r}")
        self.channels = int(channels)
        self.split = split
        if not _is_int(val_size) or val_size < 0:
            raise ValueError(f"val_size must be a non-negative integer, got {val_size!r}")
        self.mean, self.std = self._norm(mean, std)
        if classes is not None:
            classes = list(classes)
            bad = [c for c in classes if not _is_int(c) or not 0 <= c <= 9]
            if bad or not classes or len(set(classes)) != len(classes):
                raise ValueError(f"classes must be distinct class ids in 0..9, got {classes!r}")
        self.classes = [int(c) for c in (classes if classes is not None else range(10))]
        self.class_names = [CLASSES[c] for c in self.classes]
        per_class, limit = _positive_int("per_class", per_class), _positive_int("limit", limit)
        if isinstance(shift, str):
            if shift_strength is None:
                raise ValueError(f"shift {shift!r} given by name needs shift_strength in [0, 1]")
            shift = make_shift(shift, shift_strength)
        elif shift is not None and not callable(shift):
            raise ValueError(f"shift must be a shift name (one of {sorted(SHIFTS)}), a callable or None, got {shift!r}")
        self.shift = shift

        images, labels = load_fashion_mnist("test" if split == "test" else "train", root)
        keep = np.ones(len(labels), dtype=bool)
        if split != "test" and val_size:
            val = carve_val(labels, val_size, split_seed)
            keep = val if split == "val" else ~val
        elif split == "val":
            raise ValueError("split 'val' needs val_size > 0 (the number of images carved from the train file)")
        relabel = np.full(10, -1, dtype=np.int64)
        relabel[self.classes] = np.arange(len(self.classes))
        idx = np.flatnonzero(keep & (relabel[labels] >= 0))
        rng = np.random.default_rng(seed)
        if per_class is not None:
            idx = np.concatenate([rng.permutation(idx[labels[idx] == c])[:per_class] for c in self.classes])
        if limit is not None and limit < len(idx):
            idx = rng.choice(idx, size=limit, replace=False)
        self.indices = np.sort(idx)  # positions in the file split
        self.targets = torch.from_numpy(relabel[labels[self.indices]])
        self.data = self._precompute(images[self.indices])  # [N, 1, R, R] in [0, 1] after the shift

    def _norm(self, mean, std):
        if (mean is None) != (std is None):
            raise ValueError("give both mean and std, or neither")
        if mean is None:
            return None, None
        out = []
        for name, v in (("mean", mean), ("std", std)):
            t = torch.as_tensor(v, dtype=torch.float32).flatten()
            if t.numel() not in (1, self.channels):
                raise ValueError(f"{name} must have 1 or {self.channels} values (channels), got {v!r}")
            out.append(t.expand(self.channels).reshape(1, self.channels, 1, 1).clone())
        if (out[1] <= 0).any():
            raise ValueError(f"std must be positive, got {std!r}")
        return out

    @torch.no_grad()
    def _precompute(self, images: np.ndarray, chunk: int = 8192) -> torch.Tensor:
        x = torch.from_numpy(images).unsqueeze(1).float().div_(255.0)
        if self.shift is not None:
            x = self.shift(x)
        r = self.resolution
        if r == 28:
            return x.contiguous()
        out = torch.empty(len(x), 1, r, r)
        for i in range(0, len(x), chunk):
            out[i:i + chunk] = F.interpolate(x[i:i + chunk], size=(r, r), mode="bilinear",
                                             align_corners=False, antialias=r < 28)
        return out

    def _finish(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels == 3:
            x = x.expand(-1, 3, -1, -1)
        if self.mean is not None:
            return (x - self.mean) / self.std
        return x.contiguous()

    # num_classes, __len__, __getitem__: the Dataset protocol, of the same shape as ImageNetFolder's
    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int):
        return self._finish(self.data[i].unsqueeze(0))[0], int(self.targets[i])

    def batch(self, indices) -> Tuple[torch.Tensor, torch.Tensor]:
        """(images [B, channels, R, R], labels [B]) for a sequence or tensor of indices."""
        idx = torch.as_tensor(indices, dtype=torch.long)
        return self._finish(self.data[idx]), self.targets[idx]

    def __getitems__(self, indices):  # used by DataLoader: one batched op instead of B item calls
        x, y = self.batch(indices)
        return list(zip(x.unbind(0), y.tolist()))

    def tensors(self) -> Tuple[torch.Tensor, torch.Tensor]:
        """The whole dataset as (images, labels) tensors (materialises `channels` copies when 3)."""
        return self._finish(self.data), self.targets
