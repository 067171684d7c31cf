"""The embedded Fashion-MNIST canvas set: deterministic, real COCO files, read back through the COCO reader."""
import json
import warnings

import numpy as np
import pytest
import torch

from quadranet.data.fashion_mnist import fashion_mnist_root
from quadranet.detection.coco import CocoDetection, coco_paths
from quadranet.detection.synthetic import CanvasSpec, build_canvas_coco, render_split

pytestmark = pytest.mark.skipif(not (fashion_mnist_root() / "train-images-idx3-ubyte.gz").exists()
                                and not (fashion_mnist_root() / "train-images-idx3-ubyte").exists(),
                                reason="Fashion-MNIST (Debian dataset-fashion-mnist) not installed")

SPEC = CanvasSpec(train_size=6, val_size=3, canvas=64, min_objects=1, max_objects=3, min_side=16, max_side=32, seed=1)


def test_written_as_coco_and_read_back(tmp_path):
    folder = build_canvas_coco(SPEC, tmp_path)
    assert folder.parent == tmp_path and folder.name == f"fashion_mnist_canvas-{SPEC.digest()}"
    for split, n in (("train", 6), ("val", 3)):
        images_dir, ann = coco_paths(folder, split)
        data = json.loads(ann.read_text())
        assert len(data["images"]) == n and len(list(images_dir.glob("*.png"))) == n
        assert [c["id"] for c in data["categories"]] == list(range(1, 11))
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # nothing skipped
            ds = CocoDetection(images_dir, ann, train=False)
        assert len(ds) == n
        for i in range(n):
            image, t = ds[i]
            assert image.shape == (3, 64, 64) and torch.equal(image[0], image[1])  # grey in RGB
            for box, mask, area in zip(t["boxes"], t["masks"], t["area"]):
                ys, xs = torch.nonzero(mask, as_tuple=True)
                # the box is the tight box of the mask, the area its pixel count, and garment pixels are bright
                assert box.tolist() == [xs.min().item(), ys.min().item(), xs.max().item() + 1, ys.max().item() + 1]
                assert area.item() == mask.sum().item() and image[0][mask.bool()].min() > 32 / 255
            x1, y1, x2, y2 = t["boxes"].T  # garments do not overlap
            for a in range(len(x1)):
                for b in range(a):
                    assert x2[a] <= x1[b] or x2[b] <= x1[a] or y2[a] <= y1[b] or y2[b] <= y1[a]


def test_deterministic_and_cached(tmp_path):
    a = build_canvas_coco(SPEC, tmp_path / "a")
    b = build_canvas_coco(SPEC, tmp_path / "b")
    for rel in ("annotations/instances_train.json", "annotations/instances_val.json", "train/000003.png"):
        assert (a / rel).read_bytes() == (b / rel).read_bytes()
    stamp = (a / "spec.json").stat().st_mtime_ns
    assert build_canvas_coco(SPEC, tmp_path / "a") == a and (a / "spec.json").stat().st_mtime_ns == stamp
    assert not list((tmp_path / "a").glob(".*tmp"))  # no leftovers of the atomic write


def test_other_seed_other_set_and_splits_use_separate_garments():
    c1, a1 = render_split(SPEC, "train")
    c2, _ = render_split(CanvasSpec(**{**SPEC.__dict__, "seed": 2}), "train")
    assert not np.array_equal(c1, c2)
    assert all(SPEC.min_objects <= sum(a["image_index"] == i for a in a1) <= SPEC.max_objects for i in range(6))


def test_bad_spec_is_refused():
    with pytest.raises(ValueError, match="min_objects=4 exceeds max_objects=3"):
        CanvasSpec(min_objects=4)
    with pytest.raises(ValueError, match="max_side"):
        CanvasSpec(canvas=32, max_side=64)
    with pytest.raises(ValueError, match="train_size=0"):
        CanvasSpec(train_size=0)
