"""The data of a detection run: where its COCO files are (or the canvas set, built when first needed), its
train and eval sets read through the COCO reader, batches loaded and moved to the device."""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Optional

import torch
from torch.utils.data import DataLoader

from ..config import ConfigError
from ..data import loaders
from .coco import CocoDetection, coco_paths, collate
from .config import DetectionConfig
from .synthetic import CanvasSpec, build_canvas_coco

__all__ = ["COCO_ENV", "build_datasets", "check_data", "loader", "split_paths", "to_device"]

COCO_ENV = "QUADRANET_COCO"


def split_paths(cfg: DetectionConfig) -> dict:
    """{'train': (images, ann), 'val': (images, ann)} of the run's data; builds the canvas set if needed."""
    d = cfg.data
    if d.dataset == "fashion_mnist_canvas":
        root = build_canvas_coco(CanvasSpec(**dataclasses.asdict(d.canvas)), d.root, d.fashion_mnist_root)
        return {"train": coco_paths(root, d.train_split or "train"), "val": coco_paths(root, d.val_split or "val")}
    out = {}
    for split, images, ann, default in (("train", d.train_images, d.train_ann, "train2017"),
                                        ("val", d.val_images, d.val_ann, "val2017")):
        if images is not None:
            out[split] = (Path(images), Path(ann))
            continue
        root = d.root or os.environ.get(COCO_ENV)
        if not root:
            raise ConfigError(f"data.dataset='coco' needs data.root (a folder with annotations/ and "
                              f"{default}/), ${COCO_ENV}, or data.{split}_images with data.{split}_ann")
        out[split] = coco_paths(root, (d.train_split if split == "train" else d.val_split) or default)
    return out


def check_data(cfg: DetectionConfig) -> None:
    """Raise a clear error when the run's data is not where its config says, without reading any image."""
    d = cfg.data
    if d.dataset == "fashion_mnist_canvas":  # the canvas set is built from Fashion-MNIST when first needed
        loaders.check_data("fashion_mnist", d.fashion_mnist_root)
        return
    for split, (images, ann) in split_paths(cfg).items():
        for path, what in ((images, "image folder"), (ann, "annotation file")):
            if not path.exists():
                raise FileNotFoundError(f"COCO {split} {what} {path} does not exist; expected the layout "
                                        f"<root>/annotations/instances_<split>.json with images in <root>/<split>/")


def build_datasets(cfg: DetectionConfig, train: bool = True) -> tuple[Optional[CocoDetection], CocoDetection]:
    """(train set or None, eval set) of the run, read through the COCO reader."""
    d, paths = cfg.data, split_paths(cfg)
    train_set = None
    if train:
        train_set = CocoDetection(*paths["train"], train=True, masks=cfg.masks, keep_empty=d.keep_empty,
                                  limit=d.train_limit, flip=d.flip, seed=cfg.seed)
    eval_set = CocoDetection(*paths["val"], train=False, masks=cfg.masks, limit=d.eval_limit)
    if train_set is not None and train_set.categories != eval_set.categories:
        raise ConfigError(f"train and eval annotation files have different categories "
                          f"({len(train_set.categories)} vs {len(eval_set.categories)}): {paths['train'][1]} "
                          f"and {paths['val'][1]}")
    return train_set, eval_set


def loader(dataset, sampler, cfg: DetectionConfig, device: torch.device) -> DataLoader:
    """The batches of `dataset` that `sampler` picks, as (images, targets) lists."""
    # its own generator: a DataLoader iterator draws its base seed from the global RNG otherwise, and a run
    # resumed mid-epoch (one more iterator) would then sample differently from an uninterrupted one
    return DataLoader(dataset, batch_sampler=sampler, collate_fn=collate, num_workers=cfg.data.num_workers,
                      pin_memory=device.type == "cuda", generator=torch.Generator().manual_seed(0))


def to_device(images: list, targets: list, device: torch.device) -> tuple[list, list]:
    """A batch of images and their targets (dicts of tensors and other values) on `device`."""
    images = [im.to(device, non_blocking=True) for im in images]
    targets = [{k: (v.to(device, non_blocking=True) if torch.is_tensor(v) else v) for k, v in t.items()}
               for t in targets]
    return images, targets
