"""The embedded detection set: Fashion-MNIST garments pasted on larger canvases, written as real COCO.

Each canvas (`canvas` x `canvas` pixels, black) holds `min_objects`..`max_objects` garments, each a
Fashion-MNIST image resized to a random side in `min_side`..`max_side` and pasted where it overlaps no
other garment's box. A garment's mask is its pixels brighter than `MASK_THRESHOLD`, its box the tight box
of that mask, its area the mask's pixel count, its category its Fashion-MNIST class (ids 1..10, COCO's
convention of ids from 1). Train canvases take garments from the Fashion-MNIST train file, val canvases
from the test file, so no garment is in both.

The set is a pure function of its parameters: `build_canvas_coco` writes it once (PNG images, masks as
compressed RLE) into a folder named by a hash of the parameters, atomically, and later calls reuse it.
It is read back through the same `CocoDetection` reader as COCO 2017.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Union

import numpy as np

from ..data.fashion_mnist import CLASSES, load_fashion_mnist
from .coco import coco_paths

__all__ = ["CanvasSpec", "build_canvas_coco", "default_cache_dir", "render_split"]

MASK_THRESHOLD = 32  # of 255: a garment pixel belongs to its mask above this
CACHE_ENV = "QUADRANET_CACHE"
SPLITS = {"train": ("train", 1), "val": ("test", 2)}  # split -> (Fashion-MNIST file, rng stream)
MAX_TRIES = 50  # placements tried per garment before the canvas keeps fewer garments


@dataclass(frozen=True)
class CanvasSpec:
    """The embedded set; the defaults are the embedded detection run's (docs/detection.md gives its cost)."""
    train_size: int = 160
    val_size: int = 50
    canvas: int = 96
    min_objects: int = 1
    max_objects: int = 3
    min_side: int = 16
    max_side: int = 48
    seed: int = 0

    def __post_init__(self):
        for k, v in asdict(self).items():
            if isinstance(v, bool) or not isinstance(v, int) or v < (0 if k == "seed" else 1):
                raise ValueError(f"canvas set {k}={v!r} must be an integer >= {0 if k == 'seed' else 1}")
        if self.min_objects > self.max_objects:
            raise ValueError(f"min_objects={self.min_objects} exceeds max_objects={self.max_objects}")
        if not 8 <= self.min_side <= self.max_side <= self.canvas:
            raise ValueError(f"garment sides must satisfy 8 <= min_side ({self.min_side}) <= max_side "
                             f"({self.max_side}) <= canvas ({self.canvas})")

    def digest(self) -> str:
        text = json.dumps({**asdict(self), "mask_threshold": MASK_THRESHOLD, "version": 1}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]


def default_cache_dir() -> Path:
    """$QUADRANET_CACHE, else ~/.cache/quadranet."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "quadranet")


def _resize(img: np.ndarray, side: int) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.fromarray(img).resize((side, side), Image.BILINEAR))


def render_split(spec: CanvasSpec, split: str, fmnist_root=None):
    """(canvases uint8 [N, S, S], COCO annotation dicts without ids) of `split` ('train' or 'val')."""
    file_split, stream = SPLITS[split]
    images, labels = load_fashion_mnist(file_split, fmnist_root)
    n = spec.train_size if split == "train" else spec.val_size
    rng = np.random.default_rng([spec.seed, stream])
    s = spec.canvas
    canvases = np.zeros((n, s, s), dtype=np.uint8)
    annotations = []
    for i in range(n):
        boxes = []  # placed garments' boxes (x1, y1, x2, y2), kept apart
        for _ in range(int(rng.integers(spec.min_objects, spec.max_objects + 1))):
            k = int(rng.integers(len(images)))
            side = int(rng.integers(spec.min_side, spec.max_side + 1))
            crop = _resize(images[k], side)
            mask = crop > MASK_THRESHOLD
            if not mask.any():
                continue
            ys, xs = np.nonzero(mask)
            bx1, by1, bx2, by2 = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1  # mask box inside the crop
            for _ in range(MAX_TRIES):
                ox, oy = int(rng.integers(0, s - side + 1)), int(rng.integers(0, s - side + 1))
                box = (ox + bx1, oy + by1, ox + bx2, oy + by2)
                if all(box[2] <= b[0] or b[2] <= box[0] or box[3] <= b[1] or b[3] <= box[1] for b in boxes):
                    break
            else:
                continue
            boxes.append(box)
            region = canvases[i, oy:oy + side, ox:ox + side]
            region[mask] = crop[mask]
            full = np.zeros((s, s), dtype=bool)
            full[oy:oy + side, ox:ox + side] = mask
            annotations.append({"image_index": i, "category_id": int(labels[k]) + 1, "mask": full,
                                "bbox": [float(box[0]), float(box[1]), float(box[2] - box[0]),
                                         float(box[3] - box[1])],
                                "area": float(mask.sum()), "source_index": k})
    return canvases, annotations


def _write_split(folder: Path, spec: CanvasSpec, split: str, fmnist_root) -> None:
    from PIL import Image
    from pycocotools import mask as mask_utils

    canvases, anns = render_split(spec, split, fmnist_root)
    images_dir, ann_file = coco_paths(folder, split)
    images_dir.mkdir(parents=True, exist_ok=True)
    ann_file.parent.mkdir(parents=True, exist_ok=True)
    images = []
    for i, c in enumerate(canvases):
        name = f"{i:06d}.png"
        Image.fromarray(c).save(images_dir / name, optimize=False)
        images.append({"id": i + 1, "file_name": name, "width": spec.canvas, "height": spec.canvas})
    out = []
    for j, a in enumerate(anns):
        rle = mask_utils.encode(np.asfortranarray(a["mask"].astype(np.uint8)))
        out.append({"id": j + 1, "image_id": a["image_index"] + 1, "category_id": a["category_id"],
                    "bbox": a["bbox"], "area": a["area"], "iscrowd": 0,
                    "segmentation": {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")},
                    "fashion_mnist_index": a["source_index"]})
    data = {"info": {"description": f"Fashion-MNIST garments on {spec.canvas}x{spec.canvas} canvases "
                                    f"({split}; quadranet.detection.synthetic)", "spec": asdict(spec)},
            "licenses": [], "images": images, "annotations": out,
            "categories": [{"id": i + 1, "name": n, "supercategory": "garment"} for i, n in enumerate(CLASSES)]}
    ann_file.write_text(json.dumps(data))


def build_canvas_coco(spec: CanvasSpec = CanvasSpec(), root: Union[str, Path, None] = None,
                      fmnist_root=None) -> Path:
    """The folder holding the canvas set of `spec` in the standard COCO layout (splits 'train' and 'val'),
    written first if absent. `root`: where such sets live (default `default_cache_dir()`); the folder is
    `<root>/fashion_mnist_canvas-<hash of spec>`."""
    root = Path(root) if root is not None else default_cache_dir()
    folder = root / f"fashion_mnist_canvas-{spec.digest()}"
    done = folder / "spec.json"
    if done.is_file():
        return folder
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".{folder.name}.{os.getpid()}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        for split in SPLITS:
            _write_split(tmp, spec, split, fmnist_root)
        (tmp / "spec.json").write_text(json.dumps(asdict(spec), indent=2, sort_keys=True) + "\n")
        try:
            os.replace(tmp, folder)
        except OSError:  # another process finished the same set first: keep theirs
            if not done.is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder
