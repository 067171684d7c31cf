"""COCO-format detection data on pycocotools: the standard layout, checked on load, as torchvision targets.

Layout (COCO 2017 and the embedded Fashion-MNIST canvases alike):

    <root>/annotations/instances_<split>.json
    <root>/<split>/<file_name of each image>

The annotation file is checked before anything else reads it: a file that is not COCO json (not JSON,
missing `images` / `annotations` / `categories`, an entry without its required keys, duplicate ids) fails
at once with a `CocoFormatError` naming the file and the entry. Problems of single items are skipped and
counted instead, with one `CocoDataWarning` listing the counts (`dataset.skipped` holds them):
an image whose file is missing, an annotation on an unknown image or category, a box that is empty or lies
outside its image (a box partly outside is clipped to the image), an annotation without a usable mask
(when masks are read), and, for training, an image left without annotations (torchvision's references do
the same; evaluation keeps such images, where any detection is a false positive). Crowd annotations
(`iscrowd=1`) are left out of training targets and kept for evaluation, where COCOeval ignores
detections matched to them. The pycocotools `COCO` index built here (`dataset.coco`) holds the checked
annotations, so training and evaluation see the same ground truth.
"""
from __future__ import annotations

import contextlib
import io
import json
import math
import warnings
from collections import Counter
from pathlib import Path
from typing import Optional, Union

import numpy as np
import torch
from torch.utils.data import Dataset

__all__ = ["CocoDataWarning", "CocoDetection", "CocoFormatError", "coco_paths", "collate", "load_coco_json",
           "make_coco"]

PathLike = Union[str, Path]

SKIP_REASONS = {
    "missing_image": "images whose file is missing",
    "unknown_image": "annotations of an image id not in `images`",
    "unknown_category": "annotations of a category id not in `categories`",
    "empty_box": "annotations with an empty box (width or height <= 0)",
    "box_outside_image": "annotations whose box lies outside its image",
    "no_mask": "annotations without a usable segmentation (masks are read)",
    "no_annotations": "training images left without annotations",
}


class CocoFormatError(ValueError):
    """An annotation file or image that is not what COCO's format says; the message names the file and entry."""


class CocoDataWarning(UserWarning):
    """Items of a COCO dataset that were skipped, with their counts."""


def coco_paths(root: PathLike, split: str) -> tuple[Path, Path]:
    """(image folder, annotation file) of `split` in the standard layout under `root`."""
    root = Path(root)
    return root / split, root / "annotations" / f"instances_{split}.json"


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def load_coco_json(path: PathLike) -> dict:
    """The COCO json at `path`, with its structure checked (raises CocoFormatError on the first fault)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"COCO annotation file {str(path)!r} does not exist")
    try:
        with open(path, "rb") as f:
            data = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CocoFormatError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise CocoFormatError(f"{path}: expected a JSON object with images, annotations and categories, "
                              f"got a {type(data).__name__}")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise CocoFormatError(f"{path}: {key!r} must be a list" + ("" if key in data else " and is missing"))

    def fault(kind: str, i: int, entry, what: str):
        raise CocoFormatError(f"{path}: {kind}[{i}] {what}: {json.dumps(entry)[:200]}")

    seen = set()
    for i, im in enumerate(data["images"]):
        if not isinstance(im, dict):
            fault("images", i, im, "is not an object")
        if not _is_int(im.get("id")):
            fault("images", i, im, "needs an integer 'id'")
        if not isinstance(im.get("file_name"), str) or not im["file_name"]:
            fault("images", i, im, "needs a 'file_name'")
        for k in ("width", "height"):
            if not _is_int(im.get(k)) or im[k] <= 0:
                fault("images", i, im, f"needs a positive integer {k!r}")
        if im["id"] in seen:
            fault("images", i, im, f"repeats image id {im['id']}")
        seen.add(im["id"])
    seen = set()
    for i, c in enumerate(data["categories"]):
        if not isinstance(c, dict) or not _is_int(c.get("id")) or not isinstance(c.get("name"), str):
            fault("categories", i, c, "needs an integer 'id' and a 'name'")
        if c["id"] in seen:
            fault("categories", i, c, f"repeats category id {c['id']}")
        seen.add(c["id"])
    if not data["categories"]:
        raise CocoFormatError(f"{path}: 'categories' is empty; a detector needs at least one class")
    seen = set()
    for i, a in enumerate(data["annotations"]):
        if not isinstance(a, dict):
            fault("annotations", i, a, "is not an object")
        for k in ("id", "image_id", "category_id"):
            if not _is_int(a.get(k)):
                fault("annotations", i, a, f"needs an integer {k!r}")
        box = a.get("bbox")
        if not isinstance(box, list) or len(box) != 4 or not all(_is_num(v) for v in box):
            fault("annotations", i, a, "needs a 'bbox' of 4 finite numbers [x, y, width, height]")
        if a["id"] in seen:
            fault("annotations", i, a, f"repeats annotation id {a['id']}")
        seen.add(a["id"])
    return data


def make_coco(data: dict):
    """A pycocotools COCO index over the dataset dict `data`, without its prints."""
    from pycocotools.coco import COCO

    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def _clean_segmentation(segm, height: int, width: int):
    """The annotation's segmentation if pycocotools can decode it at height x width, else None.
    Polygons with fewer than 3 points are dropped."""
    if isinstance(segm, list):
        polys = [p for p in segm if isinstance(p, list) and len(p) >= 6 and len(p) % 2 == 0
                 and all(_is_num(v) for v in p)]
        return polys or None
    if isinstance(segm, dict) and "counts" in segm and isinstance(segm.get("size"), list):
        if list(segm["size"]) != [height, width] or not isinstance(segm["counts"], (str, list)):
            return None
        return segm
    return None


def segmentation_to_mask(segm, height: int, width: int) -> np.ndarray:
    """uint8 mask [height, width] of a COCO segmentation (polygons, RLE or uncompressed RLE)."""
    from pycocotools import mask as mask_utils

    if isinstance(segm, list):
        rle = mask_utils.merge(mask_utils.frPyObjects(segm, height, width))
    elif isinstance(segm["counts"], list):
        rle = mask_utils.frPyObjects(segm, height, width)
    else:
        rle = dict(segm, counts=segm["counts"].encode("ascii") if isinstance(segm["counts"], str) else segm["counts"])
    with warnings.catch_warnings():  # pycocotools 2.0 under numpy 2 warns about np.array(copy=False) on every call
        warnings.simplefilter("ignore", DeprecationWarning)
        return mask_utils.decode(rle)


class CocoDetection(Dataset):
    """Images and torchvision detection targets of one COCO split.

    images_dir / ann_file: the image folder and annotation json (see `coco_paths`).
    train: training targets (crowd annotations left out; images without annotations skipped unless
    `keep_empty`) and random horizontal flips when `flip`. masks: read instance masks as well.
    limit: keep the first `limit` images (after skipping), for quick runs. seed: of the flips, which
    depend only on (seed, epoch, index), so a resumed run sees the same images.
    Items are (image float32 [3, H, W] in [0, 1], target) with target keys boxes (float32 [N, 4], x1 y1 x2
    y2 pixels), labels (int64 [N], 1..K: `label_to_category` maps them back), image_id, area, iscrowd
    and, with masks, masks (uint8 [N, H, W]).
    """

    def __init__(self, images_dir: PathLike, ann_file: PathLike, *, train: bool = False, masks: bool = True,
                 keep_empty: Optional[bool] = None, limit: Optional[int] = None, flip: Optional[bool] = None,
                 seed: int = 0, check_files: bool = True):
        self.images_dir, self.ann_file = Path(images_dir), Path(ann_file)
        if not self.images_dir.is_dir():
            raise FileNotFoundError(f"COCO image folder {str(self.images_dir)!r} does not exist "
                                    f"(annotations: {str(self.ann_file)!r})")
        self.train, self.masks, self.seed, self.epoch = train, masks, seed, 0
        self.flip = train if flip is None else flip
        keep_empty = (not train) if keep_empty is None else keep_empty
        data = load_coco_json(self.ann_file)
        skipped: Counter = Counter()

        images = {}
        for im in data["images"]:
            if check_files and not (self.images_dir / im["file_name"]).is_file():
                skipped["missing_image"] += 1
                continue
            images[im["id"]] = im
        all_ids = {im["id"] for im in data["images"]}
        cats = {c["id"] for c in data["categories"]}
        anns = []
        for a in data["annotations"]:
            im = images.get(a["image_id"])
            if im is None:  # annotations of an image skipped for its missing file go with it, uncounted
                if a["image_id"] not in all_ids:
                    skipped["unknown_image"] += 1
                continue
            if a["category_id"] not in cats:
                skipped["unknown_category"] += 1
                continue
            x, y, w, h = (float(v) for v in a["bbox"])
            if not (w > 0 and h > 0):
                skipped["empty_box"] += 1
                continue
            x1, y1 = max(x, 0.0), max(y, 0.0)
            x2, y2 = min(x + w, float(im["width"])), min(y + h, float(im["height"]))
            if not (x2 > x1 and y2 > y1):
                skipped["box_outside_image"] += 1
                continue
            a = dict(a, bbox=[x1, y1, x2 - x1, y2 - y1])
            a.setdefault("iscrowd", 0)
            a.setdefault("area", (x2 - x1) * (y2 - y1))
            if masks:
                segm = _clean_segmentation(a.get("segmentation"), im["height"], im["width"])
                if segm is None:
                    skipped["no_mask"] += 1
                    continue
                a["segmentation"] = segm
            anns.append(a)
        per_image = Counter(a["image_id"] for a in anns if not (train and a["iscrowd"]))
        ids = [i for i in images if keep_empty or per_image[i] > 0]
        if not keep_empty:
            skipped["no_annotations"] = len(images) - len(ids)
        if limit is not None:
            ids = ids[:limit]
        keep = set(ids)
        clean = {k: v for k, v in data.items() if k not in ("images", "annotations")}
        clean["images"] = [images[i] for i in ids]
        clean["annotations"] = [a for a in anns if a["image_id"] in keep]
        self.coco = make_coco(clean)
        self.ids = ids
        self.categories = sorted(cats)
        self.category_names = {c["id"]: c["name"] for c in data["categories"]}
        self.label_to_category = {i + 1: c for i, c in enumerate(self.categories)}
        self.category_to_label = {c: i for i, c in self.label_to_category.items()}
        self.skipped = {k: v for k, v in skipped.items() if v}
        if self.skipped:
            warnings.warn(f"{self.ann_file}: skipped " + "; ".join(
                f"{n} {SKIP_REASONS[k]}" for k, n in sorted(self.skipped.items())), CocoDataWarning, stacklevel=2)
        if not self.ids:
            raise CocoFormatError(f"{self.ann_file}: no usable image left (skipped: {self.skipped or 'none'}; "
                                  f"images folder {str(self.images_dir)!r})")

    @property
    def num_classes(self) -> int:
        """Classes of a torchvision detector on this data: the categories plus background (label 0)."""
        return len(self.categories) + 1

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.ids)

    def load_image(self, image_id: int) -> torch.Tensor:
        from PIL import Image, UnidentifiedImageError

        info = self.coco.imgs[image_id]
        path = self.images_dir / info["file_name"]
        try:
            with Image.open(path) as im:
                arr = np.asarray(im.convert("RGB"))
        except (OSError, UnidentifiedImageError) as e:
            raise CocoFormatError(f"image {str(path)!r} (id {image_id}) cannot be read: {e}") from None
        if arr.shape[:2] != (info["height"], info["width"]):
            raise CocoFormatError(f"image {str(path)!r} (id {image_id}) is {arr.shape[1]}x{arr.shape[0]} "
                                  f"but {self.ann_file} says {info['width']}x{info['height']}")
        return torch.from_numpy(arr.copy()).permute(2, 0, 1).float().div_(255.0)

    def target(self, image_id: int) -> dict:
        info = self.coco.imgs[image_id]
        h, w = info["height"], info["width"]
        anns = [a for a in self.coco.imgToAnns.get(image_id, []) if not (self.train and a["iscrowd"])]
        boxes = torch.tensor([[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]]
                              for a in anns], dtype=torch.float32).reshape(-1, 4)
        t = {"boxes": boxes,
             "labels": torch.tensor([self.category_to_label[a["category_id"]] for a in anns], dtype=torch.int64),
             "image_id": int(image_id),
             "area": torch.tensor([float(a["area"]) for a in anns], dtype=torch.float32),
             "iscrowd": torch.tensor([int(a["iscrowd"]) for a in anns], dtype=torch.int64)}
        if self.masks:
            m = [segmentation_to_mask(a["segmentation"], h, w) for a in anns]
            t["masks"] = torch.from_numpy(np.stack(m)) if m else torch.zeros((0, h, w), dtype=torch.uint8)
        return t

    def _flips(self, index: int) -> bool:
        if not self.flip:
            return False
        return bool(np.random.default_rng([self.seed, self.epoch, index]).random() < 0.5)

    def __getitem__(self, index: int):
        image_id = self.ids[index]
        image, target = self.load_image(image_id), self.target(image_id)
        if self._flips(index):
            w = image.shape[-1]
            image = image.flip(-1)
            b = target["boxes"]
            target["boxes"] = torch.stack([w - b[:, 2], b[:, 1], w - b[:, 0], b[:, 3]], dim=1)
            if "masks" in target:
                target["masks"] = target["masks"].flip(-1)
        return image, target


def collate(batch):
    """(list of images, list of targets): detection images differ in size, torchvision batches them itself."""
    images, targets = zip(*batch)
    return list(images), list(targets)
