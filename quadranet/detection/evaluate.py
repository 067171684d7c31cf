"""COCO evaluation (pycocotools COCOeval) of torchvision detector outputs: box and mask AP.

Metrics are COCOeval's first six numbers per IoU type, as fractions in [0, 1] (COCO papers print them
x100): ap (IoU 0.50:0.95), ap50, ap75, and aps / apm / apl over small (< 32^2 px), medium and large
objects. COCOeval reports -1 where no ground truth falls in a size range; we give None there.
"""
from __future__ import annotations

import contextlib
import io
from typing import Iterable, Optional, Sequence

import numpy as np
import torch

__all__ = ["STAT_NAMES", "coco_evaluate", "empty_metrics", "evaluate_model", "to_coco_results"]

STAT_NAMES = ("ap", "ap50", "ap75", "aps", "apm", "apl")
PREFIX = {"bbox": "box", "segm": "mask"}


def to_coco_results(outputs: Sequence[dict], image_ids: Sequence[int], label_to_category: dict,
                    masks: bool = False, mask_threshold: float = 0.5) -> list[dict]:
    """COCO result entries of detector `outputs` (torchvision's: boxes x1y1x2y2, labels, scores, masks
    [N, 1, H, W] probabilities at the original image size). Labels not in `label_to_category` (0, the
    background, which the sigmoid heads of FCOS / RetinaNet can still emit early in training) are dropped."""
    from pycocotools import mask as mask_utils

    results = []
    for out, image_id in zip(outputs, image_ids):
        boxes = out["boxes"].detach().float().cpu()
        if boxes.numel() == 0:
            continue
        xywh = torch.cat([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], dim=1).tolist()
        labels, scores = out["labels"].tolist(), out["scores"].detach().float().cpu().tolist()
        rles = None
        if masks:
            binary = (out["masks"][:, 0] > mask_threshold).cpu().numpy().astype(np.uint8)
            rles = mask_utils.encode(np.asfortranarray(binary.transpose(1, 2, 0)))
        for j, (box, label, score) in enumerate(zip(xywh, labels, scores)):
            if int(label) not in label_to_category:  # 0, background: FCOS / RetinaNet score it like any class
                continue
            r = {"image_id": int(image_id), "category_id": int(label_to_category[int(label)]),
                 "bbox": [round(v, 2) for v in box], "score": float(score)}
            if rles is not None:
                r["segmentation"] = {"size": [int(v) for v in rles[j]["size"]],
                                     "counts": rles[j]["counts"].decode("ascii")}
            results.append(r)
    return results


def empty_metrics(iou_types: Iterable[str] = ("bbox", "segm")) -> dict:
    """Every metric of `iou_types` as None (box-only detectors report mask metrics as None)."""
    return {f"{PREFIX[t]}_{s}": None for t in iou_types for s in STAT_NAMES}


def coco_evaluate(coco_gt, results: list, iou_types: Sequence[str] = ("bbox",),
                  image_ids: Optional[Sequence[int]] = None, return_summary: bool = False):
    """COCOeval of `results` (COCO result dicts) against `coco_gt` (a pycocotools COCO) for each IoU type
    ('bbox', 'segm'), over `image_ids` (default: every image of coco_gt).

    Returns {'box_ap': ..., 'box_ap50': ..., 'mask_ap': ...} (and COCOeval's printed summary when
    `return_summary`). With no detection at all, AP is 0 for every size range holding ground truth.
    """
    from pycocotools.cocoeval import COCOeval

    unknown = [t for t in iou_types if t not in PREFIX]
    if unknown:
        raise ValueError(f"unknown IoU type(s) {unknown}; expected 'bbox' and/or 'segm'")
    ids = sorted(coco_gt.getImgIds() if image_ids is None else {int(i) for i in image_ids})
    id_set = set(ids)
    metrics, summary = {}, []
    for iou_type in iou_types:
        if iou_type == "segm" and results and any("segmentation" not in r for r in results):
            raise ValueError("iou type 'segm' needs a 'segmentation' in every result")
        # as torchvision's reference evaluation: mask results carry no box, so pycocotools takes their area
        # (for the size ranges) from the mask; box results carry no mask
        drop = "bbox" if iou_type == "segm" else "segmentation"
        ours = [{k: v for k, v in r.items() if k != drop} for r in results if r["image_id"] in id_set]
        text = io.StringIO()
        with contextlib.redirect_stdout(text):
            if ours:
                coco_dt = coco_gt.loadRes(ours)  # (copies: loadRes adds keys to the dicts it gets)
                ev = COCOeval(coco_gt, coco_dt, iou_type)
                ev.params.imgIds = ids
                ev.evaluate()
                ev.accumulate()
                ev.summarize()
                stats = [float(v) for v in ev.stats[:6]]
            else:
                stats = _no_detection_stats(coco_gt, ids)
        summary.append(f"IoU type {iou_type}:\n{text.getvalue()}")
        for name, v in zip(STAT_NAMES, stats):
            metrics[f"{PREFIX[iou_type]}_{name}"] = None if v < 0 else v
    return (metrics, "".join(summary)) if return_summary else metrics


def _no_detection_stats(coco_gt, ids) -> list:
    """COCOeval's numbers with no detection: 0 where non-crowd ground truth exists in the size range, else -1."""
    areas = [a["area"] for a in coco_gt.loadAnns(coco_gt.getAnnIds(imgIds=ids)) if not a.get("iscrowd", 0)]
    has = lambda lo, hi: any(lo <= a < hi for a in areas)  # noqa: E731
    big = 1e5 ** 2
    any_gt = has(0, big)
    return [0.0 if any_gt else -1.0] * 3 + [0.0 if has(*r) else -1.0 for r in ((0, 32 ** 2), (32 ** 2, 96 ** 2),
                                                                                 (96 ** 2, big))]


@torch.no_grad()
def evaluate_model(model: torch.nn.Module, loader, dataset, device: torch.device, masks: bool,
                   amp_dtype: Optional[torch.dtype] = None, max_batches: Optional[int] = None):
    """COCO metrics of `model` on `dataset` (a CocoDetection) over the batches of `loader`, plus the
    number of images seen. Box-only models give mask metrics of None."""
    was = model.training
    model.eval()
    results, seen = [], []
    try:
        for b, (images, targets) in enumerate(loader):
            if max_batches is not None and b >= max_batches:
                break
            images = [im.to(device, non_blocking=True) for im in images]
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                outputs = model(images)
            ids = [t["image_id"] for t in targets]
            results += to_coco_results(outputs, ids, dataset.label_to_category, masks=masks)
            seen += ids
    finally:
        model.train(was)
    iou_types = ("bbox", "segm") if masks else ("bbox",)
    metrics = {**empty_metrics(), **coco_evaluate(dataset.coco, results, iou_types, image_ids=seen)}
    metrics["eval_images"] = len(seen)
    metrics["detections"] = len(results)
    return metrics
