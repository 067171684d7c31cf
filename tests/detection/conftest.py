import json
from pathlib import Path

import numpy as np
import pytest


def write_coco(root: Path, data: dict, sizes: dict = None, split: str = "val", skip_files=()) -> tuple:
    """Write `data` as <root>/annotations/instances_<split>.json and a black PNG per image (sizes from
    `data`, or `sizes[file_name]`), except `skip_files`. Returns (images_dir, ann_file)."""
    from PIL import Image

    images_dir, ann = root / split, root / "annotations" / f"instances_{split}.json"
    images_dir.mkdir(parents=True, exist_ok=True)
    ann.parent.mkdir(parents=True, exist_ok=True)
    for im in data.get("images", []):
        if im["file_name"] in skip_files:
            continue
        w, h = (sizes or {}).get(im["file_name"], (im["width"], im["height"]))
        Image.fromarray(np.zeros((h, w, 3), dtype=np.uint8)).save(images_dir / im["file_name"])
    ann.write_text(json.dumps(data))
    return images_dir, ann


def tiny_data() -> dict:
    """Two 64x48 images, categories 3 and 7 (non-contiguous ids, as in COCO), three annotations."""
    square = [10, 10, 30, 10, 30, 30, 10, 30]  # polygon of the box [10, 10, 20, 20]
    return {
        "images": [{"id": 1, "file_name": "a.png", "width": 64, "height": 48},
                   {"id": 2, "file_name": "b.png", "width": 64, "height": 48}],
        "categories": [{"id": 7, "name": "seven"}, {"id": 3, "name": "three"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 3, "bbox": [10, 10, 20, 20], "area": 400, "iscrowd": 0,
             "segmentation": [square]},
            {"id": 2, "image_id": 1, "category_id": 7, "bbox": [40, 5, 10, 30], "area": 300, "iscrowd": 0,
             "segmentation": [[40, 5, 50, 5, 50, 35, 40, 35]]},
            {"id": 3, "image_id": 2, "category_id": 7, "bbox": [0, 0, 8, 8], "area": 64, "iscrowd": 0,
             "segmentation": [[0, 0, 8, 0, 8, 8, 0, 8]]},
        ],
    }


@pytest.fixture
def tiny_coco(tmp_path):
    return write_coco(tmp_path, tiny_data())


@pytest.fixture(name="tiny_data")
def tiny_data_fixture():
    """A factory of fresh copies of `tiny_data()`."""
    return tiny_data


@pytest.fixture(name="write_coco")
def write_coco_fixture():
    return write_coco
