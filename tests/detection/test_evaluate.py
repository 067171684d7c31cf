"""COCOeval wrapper against a hand-checked case: two 40x40 boxes (COCO 'medium') in one 100x100 image."""
import numpy as np
import pytest
import torch

from quadranet.detection.coco import make_coco
from quadranet.detection.evaluate import coco_evaluate, empty_metrics, to_coco_results

A, B = [10, 10, 40, 40], [50, 50, 40, 40]  # x, y, w, h


def square(x, y, w, h):
    return [[x, y, x + w, y, x + w, y + h, x, y + h]]


@pytest.fixture
def gt():
    return make_coco({
        "images": [{"id": 1, "file_name": "a.png", "width": 100, "height": 100}],
        "categories": [{"id": 3, "name": "three"}],
        "annotations": [{"id": i + 1, "image_id": 1, "category_id": 3, "bbox": box, "area": 1600.0, "iscrowd": 0,
                         "segmentation": square(*box)} for i, box in enumerate((A, B))],
    })


def det(box, score, image_id=1, category_id=3):
    return {"image_id": image_id, "category_id": category_id, "bbox": list(map(float, box)), "score": score}


def test_perfect_detections_give_ap_one(gt):
    m = coco_evaluate(gt, [det(A, 0.9), det(B, 0.8)])
    assert m["box_ap"] == m["box_ap50"] == m["box_ap75"] == m["box_apm"] == 1.0
    assert m["box_aps"] is None and m["box_apl"] is None  # no ground truth of those sizes: COCOeval's -1


def test_a_shifted_box_fails_the_strict_thresholds_only(gt):
    # B moved 6 px right: IoU = 34 * 40 / (2 * 1600 - 34 * 40) = 34 / 46 = 0.739, a match at IoU 0.50..0.70
    # (5 of COCO's 10 thresholds), a false positive at 0.75..0.95. There, with A first by score, precision
    # is 1 up to recall 0.5 and recall never passes 0.5: 51 of the 101 recall points, AP_t = 51 / 101.
    m = coco_evaluate(gt, [det(A, 0.9), det([56, 50, 40, 40], 0.8)])
    assert m["box_ap50"] == pytest.approx(1.0)
    assert m["box_ap75"] == pytest.approx(51 / 101)
    assert m["box_ap"] == pytest.approx((5 * 1.0 + 5 * 51 / 101) / 10)
    # the same false positive ranked first: precision 1/2 up to recall 0.5 at the strict thresholds
    m = coco_evaluate(gt, [det(A, 0.8), det([56, 50, 40, 40], 0.9)])
    assert m["box_ap75"] == pytest.approx(0.5 * 51 / 101)


def test_missing_detections(gt):
    m = coco_evaluate(gt, [det(A, 0.9)])
    assert m["box_ap"] == pytest.approx(51 / 101)  # recall stops at 1/2 at every threshold
    none = coco_evaluate(gt, [])
    assert none["box_ap"] == none["box_ap50"] == none["box_apm"] == 0.0 and none["box_aps"] is None
    assert set(empty_metrics()) == {f"{p}_{s}" for p in ("box", "mask") for s in ("ap", "ap50", "ap75", "aps", "apm", "apl")}


def test_detector_outputs_convert_to_coco_results_and_masks_score(gt):
    masks = torch.zeros(2, 1, 100, 100)
    masks[0, 0, 10:50, 10:50] = 0.9
    masks[1, 0, 50:90, 50:90] = 0.8
    outputs = [{"boxes": torch.tensor([[10.0, 10.0, 50.0, 50.0], [50.0, 50.0, 90.0, 90.0]]),
                "labels": torch.tensor([1, 1]), "scores": torch.tensor([0.9, 0.8]), "masks": masks}]
    results = to_coco_results(outputs, [1], {1: 3}, masks=True)
    assert [r["bbox"] for r in results] == [A, B] and {r["category_id"] for r in results} == {3}
    assert results[0]["segmentation"]["size"] == [100, 100] and isinstance(results[0]["segmentation"]["counts"], str)
    m = coco_evaluate(gt, results, ("bbox", "segm"))
    assert m["box_ap"] == 1.0 and m["mask_ap"] == 1.0 and m["mask_ap75"] == 1.0
    half = masks.clone()
    half[1, 0, 50:90, 70:90] = 0.0  # the second mask loses half its pixels: mask IoU 0.5
    m = coco_evaluate(gt, to_coco_results([{**outputs[0], "masks": half}], [1], {1: 3}, masks=True), ("bbox", "segm"))
    assert m["box_ap"] == 1.0 and m["mask_ap50"] == pytest.approx(1.0) and m["mask_ap75"] == pytest.approx(51 / 101)
    empty = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64), "scores": torch.zeros(0)}
    assert to_coco_results([empty], [1], {1: 3}) == []
    background = {"boxes": torch.tensor([[1.0, 1.0, 5.0, 5.0]]), "labels": torch.tensor([0]), "scores": torch.tensor([0.5])}
    assert to_coco_results([background], [1], {1: 3}) == []


def test_evaluation_over_a_subset_of_images(gt):
    gt.dataset["images"].append({"id": 2, "file_name": "b.png", "width": 100, "height": 100})
    gt.dataset["annotations"].append({"id": 3, "image_id": 2, "category_id": 3, "bbox": [0, 0, 5, 5], "area": 25.0,
                                      "iscrowd": 0, "segmentation": square(0, 0, 5, 5)})
    gt.createIndex()
    results = [det(A, 0.9), det(B, 0.8)]
    assert coco_evaluate(gt, results, image_ids=[1])["box_ap"] == 1.0
    assert coco_evaluate(gt, results)["box_aps"] == 0.0  # image 2's small box was missed
    with pytest.raises(ValueError, match="unknown IoU type"):
        coco_evaluate(gt, results, ("keypoints",))
    # precision 1 up to recall 2/3: the recall points 0, 0.01, ..., 0.66
    assert np.isclose(coco_evaluate(gt, results)["box_ap50"], 67 / 101)
