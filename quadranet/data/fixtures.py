"""`quadranet fixtures DIR`: tiny stand-ins of the paper-scale data and weights, in their real layouts.

Written under DIR (workflow/config/rehearsal.yaml reads data/rehearsal):
  imagenet/      ImageNet-1K: train/<wnid>/*.JPEG and val/<wnid>/*.JPEG, 1000 wnids
  imagenet21k/   ImageNet-21K (same layout, a handful of wnids, enough images for E2's per-class subsets)
  coco/          COCO 2017: annotations/instances_{train,val}2017.json, train2017/, val2017/ (polygon masks,
                 non-contiguous category ids as in COCO)
  weights/       convnext_{tiny,small,base}.safetensors: timm's key names and shapes, random init
Images are real JPEGs whose content depends on the class; everything is seeded, so the same options write the
same files. Each part is written to a temporary folder and renamed into place; a part already written with the
same options is kept (its `.fixture.json`, or the weights file's metadata, records them).
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

__all__ = ["COCO_CATEGORIES", "PAPER_ARCHS", "PARTS", "make_fixtures", "wnids", "write_coco", "write_imagenet",
           "write_weights"]

PARTS = ("imagenet", "imagenet21k", "coco", "weights")
PAPER_ARCHS = ("convnext_tiny", "convnext_small", "convnext_base")  # the paper's ConvNeXt-T/S/B (paper.yaml weights:)
# a few of COCO's own categories: ids with gaps, as in instances_*2017.json
COCO_CATEGORIES = ({"id": 1, "name": "person", "supercategory": "person"},
                   {"id": 3, "name": "car", "supercategory": "vehicle"},
                   {"id": 18, "name": "dog", "supercategory": "animal"},
                   {"id": 44, "name": "bottle", "supercategory": "kitchen"})
MARKER = ".fixture.json"


def wnids(n: int, seed: int) -> list[str]:
    """`n` distinct, sorted WordNet-id-like names ('n01440764'), the same for the same seed."""
    rng = np.random.default_rng([seed, n])
    return [f"n{v:08d}" for v in np.sort(rng.choice(14_000_000, size=n, replace=False) + 1_000_000)]


def _image(rng: np.random.Generator, look: np.ndarray, height: int, width: int) -> np.ndarray:
    """uint8 [H, W, 3]: stripes whose colours, frequency and angle come from `look` (one per class), with a
    random phase and noise per image."""
    c1, c2, freq, angle = look[:3], look[3:6], look[6], look[7]
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    wave = 0.5 + 0.5 * np.sin(freq * (x * np.cos(angle) + y * np.sin(angle)) + rng.uniform(0, 2 * np.pi))
    img = c1 * wave[..., None] + c2 * (1 - wave[..., None]) + rng.normal(0, 12, (height, width, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def _looks(rng: np.random.Generator, n: int) -> np.ndarray:
    """[n, 8]: two colours, a stripe frequency and an angle per class."""
    return np.concatenate([rng.uniform(0, 255, (n, 6)), rng.uniform(0.2, 1.2, (n, 1)),
                           rng.uniform(0, np.pi, (n, 1))], axis=1)


def write_imagenet(root: Path, classes: int, train: int, val: int, size: int, seed: int) -> int:
    """ImageNet layout under `root`: `train` / `val` JPEGs per class, `size` px high and 5/4 as wide (the
    transforms resize and crop, as with the real, non-square images). Returns the number of images."""
    from PIL import Image

    rng = np.random.default_rng([seed, classes])
    looks, names = _looks(rng, classes), wnids(classes, seed)
    width, count = size * 5 // 4, 0
    for split, per_class in (("train", train), ("val", val)):
        for k, wnid in enumerate(names):
            folder = root / split / wnid
            folder.mkdir(parents=True)
            for i in range(per_class):
                name = f"{wnid}_{i}.JPEG" if split == "train" else f"ILSVRC2012_val_{k * per_class + i + 1:08d}.JPEG"
                Image.fromarray(_image(rng, looks[k], size, width)).save(folder / name, "JPEG", quality=90)
                count += 1
    return count


def _polygon(rng: np.random.Generator, height: int, width: int) -> list[float]:
    """A star-shaped polygon of 3-6 vertices inside the image, as COCO's [x1, y1, x2, y2, ...]."""
    r = rng.uniform(0.12, 0.3) * min(height, width)
    cx, cy = rng.uniform(r, width - r), rng.uniform(r, height - r)
    k = int(rng.integers(3, 7))
    angles = rng.uniform(0, 2 * np.pi) + 2 * np.pi * np.arange(k) / k + rng.uniform(-0.3, 0.3, k)  # spread out
    radii = rng.uniform(0.6, 1.0, k) * r
    xy = np.stack([cx + radii * np.cos(angles), cy + radii * np.sin(angles)], axis=1)
    return [round(float(v), 2) for v in xy.reshape(-1)]


def _coco_split(root: Path, split: str, n: int, size: int, rng: np.random.Generator, first_id: int) -> dict:
    from PIL import Image, ImageDraw

    colours = {c["id"]: tuple(int(v) for v in rng.integers(40, 256, 3)) for c in COCO_CATEGORIES}
    images, annotations = [], []
    folder = root / split
    folder.mkdir(parents=True)
    for i in range(n):
        image_id = first_id + i
        height, width = (size, size * 4 // 3) if i % 2 == 0 else (size * 4 // 3, size)
        background = _looks(rng, 1)[0]
        background[:6] *= 0.4  # darker than the objects
        canvas = Image.fromarray(_image(rng, background, height, width))
        draw = ImageDraw.Draw(canvas)
        for j in range(rng.integers(1, 4)):
            cat = COCO_CATEGORIES[rng.integers(len(COCO_CATEGORIES))]["id"]
            poly = _polygon(rng, height, width)
            draw.polygon(poly, fill=colours[cat])
            xs, ys = poly[0::2], poly[1::2]
            area = 0.5 * abs(float(np.dot(xs, np.roll(ys, 1)) - np.dot(ys, np.roll(xs, 1))))  # shoelace
            annotations.append({"id": image_id * 10 + j, "image_id": image_id,
                                "category_id": cat, "segmentation": [poly], "area": round(area, 2),
                                "bbox": [min(xs), min(ys), round(max(xs) - min(xs), 2), round(max(ys) - min(ys), 2)],
                                "iscrowd": 0})
        file_name = f"{image_id:012d}.jpg"
        canvas.save(folder / file_name, "JPEG", quality=90)
        images.append({"id": image_id, "file_name": file_name, "width": width, "height": height, "license": 1,
                       "date_captured": "2017-01-01 00:00:00"})
    return {"info": {"description": "quadranet fixture in the COCO 2017 layout", "version": "1.0", "year": 2017},
            "licenses": [{"id": 1, "name": "CC0", "url": ""}], "images": images, "annotations": annotations,
            "categories": [dict(c) for c in COCO_CATEGORIES]}


def write_coco(root: Path, train: int, val: int, size: int, seed: int) -> int:
    """COCO 2017 layout under `root`: `train` / `val` JPEGs with 1-3 polygon instances each. Returns the number
    of images."""
    rng = np.random.default_rng([seed, 2017])
    (root / "annotations").mkdir(parents=True)
    for split, n, first_id in (("train2017", train, 1000), ("val2017", val, 9000)):
        data = _coco_split(root, split, n, size, rng, first_id)
        (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(data))
    return train + val


def write_weights(path: Path, arch: str, seed: int, metadata: dict) -> int:
    """timm `arch` (1000 classes) at seeded random init as a .safetensors file; returns its parameter count."""
    import timm
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(seed)
    state = {k: v.contiguous() for k, v in timm.create_model(arch, pretrained=False).state_dict().items()}
    save_file(state, str(path), metadata={k: str(v) for k, v in metadata.items()})
    return sum(v.numel() for v in state.values())


def _replace(tmp: Path, final: Path) -> None:
    """Put the finished `tmp` in place of `final` (a folder or file), the old one removed after the swap."""
    old = final.with_name(f".{final.name}.old{os.getpid()}")
    if final.exists():
        final.rename(old)
    tmp.rename(final)
    if old.is_dir():
        shutil.rmtree(old)
    elif old.exists():
        old.unlink()


def _weights_options(path: Path) -> Optional[str]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), "pt") as f:
            return (f.metadata() or {}).get("quadranet_fixture")
    except Exception:  # noqa: BLE001 (not a readable safetensors file: rewrite it)
        return None


def make_fixtures(out, parts: Sequence[str] = PARTS, *, seed: int = 0, image_size: int = 40,
                  imagenet_train: int = 1, imagenet_val: int = 1, imagenet21k_classes: int = 8,
                  imagenet21k_train: int = 4, imagenet21k_val: int = 1, coco_train: int = 4, coco_val: int = 4,
                  force: bool = False, log=print) -> list[Path]:
    """Write the fixture `parts` (of PARTS) under folder `out`; returns the paths written (parts kept as they were
    are not listed). `force` rewrites parts already there."""
    bad = [p for p in parts if p not in PARTS]
    if bad:
        raise ValueError(f"unknown fixture part {bad[0]!r}; expected some of {list(PARTS)}")
    counts = dict(image_size=image_size, imagenet_train=imagenet_train, imagenet_val=imagenet_val,
                  imagenet21k_classes=imagenet21k_classes, imagenet21k_train=imagenet21k_train,
                  imagenet21k_val=imagenet21k_val, coco_train=coco_train, coco_val=coco_val)
    small = [k for k, v in counts.items() if isinstance(v, bool) or not isinstance(v, int) or v < 1]
    if small:
        raise ValueError(f"{small[0]}={counts[small[0]]!r} must be a positive integer")
    if image_size < 16:
        raise ValueError(f"image_size={image_size} must be >= 16 (COCO objects are drawn inside the images)")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    trees = {  # part -> (its options, what writes it into a folder)
        "imagenet": (("imagenet_train", "imagenet_val"), lambda d: (
            f"{write_imagenet(d, 1000, imagenet_train, imagenet_val, image_size, seed)} JPEGs, 1000 classes")),
        "imagenet21k": (("imagenet21k_classes", "imagenet21k_train", "imagenet21k_val"), lambda d: (
            f"{write_imagenet(d, imagenet21k_classes, imagenet21k_train, imagenet21k_val, image_size, seed + 21)}"
            f" JPEGs, {imagenet21k_classes} classes")),
        "coco": (("coco_train", "coco_val"), lambda d: (
            f"{write_coco(d, coco_train, coco_val, image_size, seed)} JPEGs, {len(COCO_CATEGORIES)} categories")),
    }
    written = []
    for part in (p for p in parts if p in trees):
        keys, write = trees[part]
        final, record = out / part, json.dumps({"seed": seed, "image_size": image_size,
                                                **{k: counts[k] for k in keys}}, sort_keys=True)
        if not force and (final / MARKER).is_file() and (final / MARKER).read_text() == record:
            log(f"kept {final} (written before with the same options)")
            continue
        tmp = out / f".{part}.tmp{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        what = write(tmp)
        (tmp / MARKER).write_text(record)
        _replace(tmp, final)
        written.append(final)
        log(f"wrote {final} ({what})")
    if "weights" in parts:
        (out / "weights").mkdir(exist_ok=True)
        for arch in PAPER_ARCHS:
            final = out / "weights" / f"{arch}.safetensors"
            record = json.dumps({"arch": arch, "seed": seed}, sort_keys=True)
            if not force and final.is_file() and _weights_options(final) == record:
                log(f"kept {final} (written before with the same options)")
                continue
            tmp = final.with_name(f".{final.name}.tmp{os.getpid()}")
            n = write_weights(tmp, arch, seed, {"quadranet_fixture": record, "format": "pt"})
            _replace(tmp, final)
            written.append(final)
            log(f"wrote {final} (timm {arch}, {n / 1e6:.1f}M parameters at random init)")
    return written
