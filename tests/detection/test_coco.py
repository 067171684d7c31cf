"""The COCO reader: targets as torchvision wants them, and bad input as clear errors or counted skips."""
import copy
import json
import warnings

import pytest
import torch

from quadranet.detection.coco import CocoDataWarning, CocoDetection, CocoFormatError, coco_paths, collate


def read(images_dir, ann, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("error", CocoDataWarning)  # a clean file warns about nothing
        return CocoDetection(images_dir, ann, **kw)


def test_targets_of_the_standard_layout(tiny_coco, tmp_path):
    assert coco_paths(tmp_path, "val") == tiny_coco
    ds = read(*tiny_coco)
    assert len(ds) == 2 and ds.num_classes == 3 and ds.skipped == {}
    assert ds.label_to_category == {1: 3, 2: 7}  # contiguous labels 1..K over sorted category ids
    image, t = ds[0]
    assert image.shape == (3, 48, 64) and image.dtype == torch.float32 and float(image.max()) == 0.0
    assert torch.equal(t["boxes"], torch.tensor([[10.0, 10.0, 30.0, 30.0], [40.0, 5.0, 50.0, 35.0]]))
    assert t["labels"].tolist() == [1, 2] and t["image_id"] == 1 and t["iscrowd"].tolist() == [0, 0]
    assert t["masks"].shape == (2, 48, 64) and t["masks"].dtype == torch.uint8
    ys, xs = torch.nonzero(t["masks"][0], as_tuple=True)  # the polygon's mask fills its box
    assert (xs.min(), xs.max(), ys.min(), ys.max()) == (10, 29, 10, 29)
    assert t["masks"][0].sum() == 400
    images, targets = collate([ds[0], ds[1]])
    assert len(images) == len(targets) == 2 and targets[1]["boxes"].shape == (1, 4)


def test_rle_segmentation_and_box_only_reading(tmp_path, tiny_data, write_coco):
    from pycocotools import mask as mask_utils
    import numpy as np

    data = tiny_data()
    m = np.zeros((48, 64), dtype=np.uint8, order="F")
    m[10:30, 10:30] = 1
    rle = mask_utils.encode(m)
    data["annotations"][0]["segmentation"] = {"size": [48, 64], "counts": rle["counts"].decode()}
    ds = read(*write_coco(tmp_path, data))
    assert torch.equal(ds[0][1]["masks"][0], torch.from_numpy(m.astype(np.uint8)))
    boxes_only = read(*write_coco(tmp_path, data), masks=False)
    assert "masks" not in boxes_only[0][1]


def test_flips_are_seeded_by_epoch_and_move_boxes_and_masks(tiny_coco):
    ds = read(*tiny_coco, train=True, seed=3)
    plain = read(*tiny_coco)
    flips = []
    for epoch in range(8):
        ds.set_epoch(epoch)
        image, t = ds[0]
        again = ds[0][1]["boxes"]
        assert torch.equal(t["boxes"], again)  # the same (seed, epoch, index) flips the same way
        flipped = not torch.equal(t["boxes"], plain[0][1]["boxes"])
        flips.append(flipped)
        if flipped:
            assert torch.equal(t["boxes"][0], torch.tensor([34.0, 10.0, 54.0, 30.0]))  # x -> 64 - x
            assert torch.equal(t["masks"], plain[0][1]["masks"].flip(-1))
    assert any(flips) and not all(flips)


def test_malformed_files_fail_with_the_file_and_entry_named(tmp_path, tiny_data, write_coco):
    images_dir, ann = write_coco(tmp_path, tiny_data())
    cases = {
        "{not json": "not valid JSON",
        "[]": "expected a JSON object",
        json.dumps({"images": [], "categories": []}): "'annotations' must be a list and is missing",
        json.dumps({**tiny_data(), "categories": []}): "'categories' is empty",
    }
    bad = tiny_data()
    del bad["annotations"][1]["bbox"]
    cases[json.dumps(bad)] = r"annotations\[1\] needs a 'bbox' of 4 finite numbers"
    bad = tiny_data()
    bad["images"][1]["id"] = 1
    cases[json.dumps(bad)] = r"images\[1\] repeats image id 1"
    bad = tiny_data()
    bad["images"][0]["width"] = "64"
    cases[json.dumps(bad)] = r"images\[0\] needs a positive integer 'width'"
    bad = tiny_data()
    bad["annotations"][2]["id"] = 1
    cases[json.dumps(bad)] = r"annotations\[2\] repeats annotation id 1"
    for text, message in cases.items():
        ann.write_text(text)
        with pytest.raises(CocoFormatError, match=message) as e:
            CocoDetection(images_dir, ann)
        assert str(ann) in str(e.value)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        CocoDetection(images_dir, tmp_path / "nowhere.json")
    with pytest.raises(FileNotFoundError, match="image folder"):
        CocoDetection(tmp_path / "no_images", ann)


def test_bad_items_are_skipped_and_counted(tmp_path, tiny_data, write_coco):
    data = tiny_data()
    data["images"].append({"id": 3, "file_name": "missing.png", "width": 64, "height": 48})
    data["images"].append({"id": 4, "file_name": "empty.png", "width": 64, "height": 48})
    extra = [
        {"bbox": [5, 5, 0, 10]},  # empty box
        {"bbox": [5, 5, 10, -1]},  # negative height
        {"bbox": [70, 5, 10, 10]},  # right of the image
        {"bbox": [-20, -20, 10, 10]},  # above-left of the image
        {"bbox": [60, 40, 10, 10]},  # partly outside: clipped to [60, 40, 64, 48]
        {"bbox": [5, 5, 10, 10], "category_id": 99},  # unknown category
        {"bbox": [5, 5, 10, 10], "image_id": 42},  # unknown image
        {"bbox": [5, 5, 10, 10], "image_id": 3},  # image of a missing file: goes with it, uncounted
        {"bbox": [1, 1, 10, 10], "segmentation": [[1, 1, 2]]},  # polygon of fewer than 3 points
    ]
    for i, a in enumerate(extra):
        data["annotations"].append({"id": 100 + i, "image_id": 2, "category_id": 3, "iscrowd": 0,
                                    "segmentation": [[1, 1, 9, 1, 9, 9]], **a})
    images_dir, ann = write_coco(tmp_path, data, skip_files={"missing.png"})
    with pytest.warns(CocoDataWarning, match="2 annotations with an empty box") as w:
        train = CocoDetection(images_dir, ann, train=True)
    message = str(w[0].message)
    assert "1 images whose file is missing" in message and "1 training images left without annotations" in message
    assert train.skipped == {"missing_image": 1, "empty_box": 2, "box_outside_image": 2, "unknown_category": 1,
                             "unknown_image": 1, "no_mask": 1, "no_annotations": 1}
    assert len(train) == 2  # image 3 (no file) and image 4 (no annotations) skipped
    t = train.target(2)
    assert t["boxes"].tolist() == [[0.0, 0.0, 8.0, 8.0], [60.0, 40.0, 64.0, 48.0]]
    with pytest.warns(CocoDataWarning):
        evals = CocoDetection(images_dir, ann, train=False, masks=False)
    assert len(evals) == 3 and "no_annotations" not in evals.skipped  # evaluation keeps the empty image
    assert "no_mask" not in evals.skipped  # boxes only: the bad polygon does not matter
    assert evals.target(4)["boxes"].shape == (0, 4)
    assert len(evals.target(2)["boxes"]) == 3
    assert set(evals.coco.getImgIds()) == {1, 2, 4}  # COCOeval's ground truth is the checked one


def test_crowd_annotations_are_left_out_of_training_only(tmp_path, tiny_data, write_coco):
    data = tiny_data()
    data["annotations"][2]["iscrowd"] = 1
    images_dir, ann = write_coco(tmp_path, data)
    with pytest.warns(CocoDataWarning, match="1 training images left without annotations"):
        train = CocoDetection(images_dir, ann, train=True)
    assert train.ids == [1]
    evals = read(images_dir, ann)
    assert evals.target(2)["iscrowd"].tolist() == [1]


def test_keep_empty_and_limit(tmp_path, tiny_data, write_coco):
    data = tiny_data()
    data["annotations"] = data["annotations"][:2]
    images_dir, ann = write_coco(tmp_path, data)
    assert len(read(images_dir, ann, train=True, keep_empty=True)) == 2
    assert len(read(images_dir, ann, limit=1)) == 1


def test_nothing_usable_is_an_error(tmp_path, tiny_data, write_coco):
    data = tiny_data()
    for a in data["annotations"]:
        a["bbox"] = [0, 0, 0, 0]
    images_dir, ann = write_coco(tmp_path, data)
    with pytest.warns(CocoDataWarning), pytest.raises(CocoFormatError, match="no usable image left"):
        CocoDetection(images_dir, ann, train=True)


def test_unreadable_or_wrongly_sized_image_names_the_file(tmp_path, tiny_data, write_coco):
    images_dir, ann = write_coco(tmp_path, tiny_data(), sizes={"b.png": (32, 32)})
    (images_dir / "a.png").write_bytes(b"not a png")
    ds = read(images_dir, ann)
    with pytest.raises(CocoFormatError, match=r"a\.png.*cannot be read"):
        ds[0]
    with pytest.raises(CocoFormatError, match=r"b\.png.*is 32x32 but .* says 64x48"):
        ds[1]


def test_reader_does_not_modify_the_callers_dict(tmp_path, tiny_data, write_coco):
    data = tiny_data()
    before = copy.deepcopy(data)
    write_coco(tmp_path, data)
    assert data == before
