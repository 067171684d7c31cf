"""ImageNet-1K / ImageNet-21K readers for the folder layout root/{train,val}/<wnid>/*.JPEG, with timm transforms."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGE_EXTENSIONS = (".jpeg", ".jpg", ".png")  # compared case-insensitively
ENV_VARS = {"1k": "QUADRANET_IMAGENET1K", "21k": "QUADRANET_IMAGENET21K"}
LAYOUT = "{root}/train/<wnid>/*.JPEG and {root}/val/<wnid>/*.JPEG (val sorted into class folders)"


def imagenet_transform(train: bool, input_size=224, crop_pct: float = 0.875, interpolation: str = "bilinear",
                       mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD, **kwargs):
    """timm's transform: train = RandomResizedCrop + horizontal flip (no colour jitter unless asked),
    eval = resize shorter side to input_size / crop_pct, center crop, normalise.

    Accepts a timm data config directly: imagenet_transform(False, **timm.data.resolve_data_config(model=m)).
    """
    from timm.data import create_transform

    if train:
        kwargs.setdefault("color_jitter", None)
    return create_transform(input_size=input_size, is_training=train, crop_pct=crop_pct,
                            interpolation=interpolation, mean=tuple(mean), std=tuple(std), **kwargs)


def _class_dirs(folder: Path) -> List[str]:
    """Sorted names of the sub-folders of `folder`, hidden ones ('.cache', '.ipynb_checkpoints') skipped."""
    with os.scandir(folder) as it:
        return sorted(e.name for e in it if e.is_dir() and not e.name.startswith("."))


class ImageNetFolder(Dataset):
    """Images of root/<split>/<wnid>/ labelled by the index of <wnid> among the sorted wnids of root/train
    (of the split folder itself when there is no train folder), so train and val labels agree.

    num_classes: the class count the tree must have (1000 for ImageNet-1K), or None to accept any.
    transform: a callable on PIL images; by default `imagenet_transform(augment, **transform_kwargs)`
    with augment = (split == 'train').
    shift: a pixel-wise shift (`quadranet.data.shifts`) applied to the default transform's images in [0, 1],
    before their normalisation.
    per_class / limit: keep at most that many images per class / in total, chosen with `seed` (labels and
    num_classes stay those of the whole tree).
    """

    def __init__(self, root: Union[str, Path], split: str = "train", *, num_classes: Optional[int] = None,
                 transform: Optional[Callable] = None, augment: Optional[bool] = None,
                 extensions: Sequence[str] = IMAGE_EXTENSIONS, shift: Optional[Callable] = None,
                 per_class: Optional[int] = None, limit: Optional[int] = None, seed: int = 0, **transform_kwargs):
        if split not in ("train", "val"):
            raise ValueError(f"unknown split {split!r}; expected 'train' or 'val'")
        if transform is not None and (transform_kwargs or augment is not None or shift is not None):
            raise ValueError(f"transform replaces the default transform; do not also pass augment, shift or its "
                             f"options ({sorted(transform_kwargs)})")
        for name, value in (("per_class", per_class), ("limit", limit)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"{name}={value!r} must be a positive integer or None")
        self.root, self.split = Path(root), split
        layout = LAYOUT.format(root=self.root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"ImageNet root {self.root} does not exist; expected {layout}")
        folder = self.root / split
        if not folder.is_dir():
            raise FileNotFoundError(f"ImageNet split folder {folder} does not exist; expected {layout}")
        train = self.root / "train"
        self.classes = _class_dirs(train if train.is_dir() else folder)
        if not self.classes:
            raise FileNotFoundError(f"no class folders in {train if train.is_dir() else folder}; expected {layout}")
        if num_classes is not None and len(self.classes) != num_classes:
            raise ValueError(f"expected {num_classes} class folders (wnids) under {self.root}, found "
                             f"{len(self.classes)}; is the tree complete? (num_classes=None accepts any count)")
        self.class_to_idx = {c: i for i, c in enumerate(self.classes)}
        present = _class_dirs(folder)
        if not present:
            raise FileNotFoundError(f"no class folders in {folder} (a flat folder of images must first be sorted "
                                    f"into <wnid> folders); expected {layout}")
        extra = sorted(set(present) - set(self.classes))
        if extra:
            raise ValueError(f"{folder} has class folders missing from {train}: {extra[:5]}"
                             f"{' ...' if len(extra) > 5 else ''}")
        exts = tuple(e.lower() for e in ([extensions] if isinstance(extensions, str) else extensions))
        self.samples: List[Tuple[str, int]] = []
        empty = []
        for wnid in self.classes:
            d = folder / wnid
            files = []
            if d.is_dir():
                with os.scandir(d) as it:
                    files = sorted(e.path for e in it if e.is_file() and e.name.lower().endswith(exts))
            if not files:
                empty.append(str(d))
            self.samples += [(f, self.class_to_idx[wnid]) for f in files]
        if empty:
            raise FileNotFoundError(f"{len(empty)} class folder(s) missing or without images ({', '.join(exts)}): "
                                    f"{empty[:5]}{' ...' if len(empty) > 5 else ''}")
        if per_class is not None or limit is not None:
            self.samples = [self.samples[i] for i in _subset([t for _, t in self.samples], per_class, limit, seed)]
        self.targets = [t for _, t in self.samples]
        if transform is None:
            augment = split == "train" if augment is None else augment
            if shift is None:
                transform = imagenet_transform(augment, **transform_kwargs)
            else:  # the shift sees pixels in [0, 1]: normalise after it
                mean, std = transform_kwargs.pop("mean", IMAGENET_MEAN), transform_kwargs.pop("std", IMAGENET_STD)
                transform = _ShiftThenNormalize(
                    imagenet_transform(augment, mean=(0.0,) * 3, std=(1.0,) * 3, **transform_kwargs), shift, mean, std)
        self.transform = transform

    # the Dataset protocol, of the same shape as FashionMNIST's
    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int):
        path, target = self.samples[i]
        with open(path, "rb") as f:
            img = Image.open(f).convert("RGB")
        return (self.transform(img) if self.transform is not None else img), target


def _subset(targets: Sequence[int], per_class: Optional[int], limit: Optional[int], seed: int) -> List[int]:
    """Sorted positions of at most `per_class` items of each class, then at most `limit` of those, drawn with
    `seed` (as Fashion-MNIST's subsets are)."""
    rng = np.random.default_rng(seed)
    targets = np.asarray(targets)
    idx = np.arange(len(targets))
    if per_class is not None:
        idx = np.concatenate([rng.permutation(idx[targets == c])[:per_class] for c in np.unique(targets)])
    if limit is not None and limit < len(idx):
        idx = rng.choice(idx, size=limit, replace=False)
    return np.sort(idx).tolist()


class _ShiftThenNormalize:
    """`transform` (to a tensor in [0, 1]), then `shift`, then normalisation by mean / std (a class, not a
    closure, so DataLoader workers can pickle it)."""

    def __init__(self, transform: Callable, shift: Callable, mean: Sequence[float], std: Sequence[float]):
        self.transform, self.shift = transform, shift
        self.mean = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)

    def __call__(self, img):
        return (self.shift(self.transform(img)) - self.mean) / self.std


def _root(root, edition: str) -> Path:
    root = root if root is not None else os.environ.get(ENV_VARS[edition])
    if not root:
        raise ValueError(f"no ImageNet-{edition.upper()} root: pass root= or set {ENV_VARS[edition]} "
                         f"(expected layout {LAYOUT.format(root='<root>')})")
    return Path(root)


def check_imagenet(root: Union[str, Path, None], edition: str) -> None:
    """Raise FileNotFoundError unless the train and val folders of ImageNet-`edition` ('1k' or '21k') exist.
    A cheap look (no scan of the images), for checking every run of a workflow before it starts."""
    base = _root(root, edition)
    for split in ("train", "val"):
        if not (base / split).is_dir():
            raise FileNotFoundError(f"ImageNet-{edition.upper()} split folder {base / split} does not exist; "
                                    f"expected {LAYOUT.format(root=base)}")


def imagenet1k(root: Union[str, Path, None] = None, split: str = "train", *, num_classes: Optional[int] = 1000,
               **kwargs) -> ImageNetFolder:
    """ImageNet-1K (ILSVRC-2012) from `root` or $QUADRANET_IMAGENET1K: 1000 wnid folders per split."""
    return ImageNetFolder(_root(root, "1k"), split, num_classes=num_classes, **kwargs)


def imagenet21k(root: Union[str, Path, None] = None, split: str = "train", *, num_classes: Optional[int] = None,
                **kwargs) -> ImageNetFolder:
    """ImageNet-21K (e.g. the winter21 release) from `root` or $QUADRANET_IMAGENET21K: whatever wnids it holds."""
    return ImageNetFolder(_root(root, "21k"), split, num_classes=num_classes, **kwargs)
