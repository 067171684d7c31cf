"""COCO evaluation (pycocotools COCOeval) of torchvision detector outputs, box and mask AP: `evaluate` (the loop,
over all ranks) and `evaluate_run` (a finished run's weights, on its own eval data or on other data through
`data.*` overrides).

Metrics are COCOeval's first six numbers per IoU type, as fractions in [0, 1] (COCO papers print them
x100): ap (IoU 0.50:0.95), ap50, ap75, and aps / apm / apl over small (< 32^2 px), medium and large
objects. COCOeval reports -1 where no ground truth falls in a size range; we give None there.
"""
from __future__ import annotations

import contextlib
import io
from pathlib import Path
from typing import Iterable, Optional, Sequence

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from ..config import ConfigError
from ..data import ShardedBatchSampler
from ..run import LAST, WEIGHTS, DistInfo, check_eval_overrides, evaluate_model, load_checkpoint
from .coco import CocoDetection
from .config import DetectionConfig, config_hash, load_config
from .data import build_datasets, loader
from .model import build_model

__all__ = ["STAT_NAMES", "coco_evaluate", "empty_metrics", "evaluate", "evaluate_run", "to_coco_results"]

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
def evaluate(model: nn.Module, dataset: CocoDetection, cfg: DetectionConfig, device: torch.device,
             info: DistInfo, amp: Optional[torch.dtype]) -> dict:
    """COCO box (and mask) metrics over the whole eval set; ranks share the images, rank 0 runs COCOeval."""
    was = model.training
    model.eval()
    sampler = ShardedBatchSampler(len(dataset), cfg.data.eval_batch_size * info.world_size, shuffle=False,
                                  rank=info.rank, world_size=info.world_size)
    results, seen = [], []
    try:
        for images, targets in loader(dataset, sampler, cfg, device):
            images = [im.to(device, non_blocking=True) for im in images]
            with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
                outputs = model(images)
            ids = [t["image_id"] for t in targets]
            results += to_coco_results(outputs, ids, dataset.label_to_category, masks=cfg.masks)
            seen += ids
    finally:
        model.train(was)
    if info.enabled:
        gathered = [None] * info.world_size
        dist.all_gather_object(gathered, (results, seen))
        results = [r for part in gathered for r in part[0]]
        seen = sorted({i for part in gathered for i in part[1]})
    metrics = empty_metrics()
    if info.is_main:
        metrics.update(coco_evaluate(dataset.coco, results, ("bbox", "segm") if cfg.masks else ("bbox",), seen))
    metrics.update(eval_images=len(seen), detections=len(results))
    return metrics


def evaluate_run(run, overrides: tuple = (), out: Optional[str] = None) -> dict:
    """COCO metrics of the detector in run folder `run` (its config.yaml and model.safetensors, or, for a
    run still in progress, its last checkpoint), on its eval data or other data (`data.*` overrides)."""
    from safetensors.torch import load_file

    run = Path(run)
    if not (run / "config.yaml").is_file():
        raise FileNotFoundError(f"{run / 'config.yaml'} not found; expected the --out folder of a quadranet "
                                f"detect train run")
    check_eval_overrides(overrides, ("data.", "train.device", "train.amp"))
    cfg = load_config(run / "config.yaml", overrides)
    if (run / WEIGHTS).is_file():
        weights, source = load_file(str(run / WEIGHTS)), str(run / WEIGHTS)
    else:
        ckpt_dir = Path(cfg.train.checkpoint_dir or run / "checkpoints")
        state = load_checkpoint(ckpt_dir, config_hash(load_config(run / "config.yaml")))
        if state is None:
            raise FileNotFoundError(f"{run} holds neither {WEIGHTS} nor a checkpoint in {ckpt_dir}")
        weights, source = state["model"], str(ckpt_dir / LAST)
    _, eval_set = build_datasets(cfg, train=False)
    model, _ = build_model(cfg, eval_set.num_classes, weights=False)
    try:
        model.load_state_dict(weights)
    except RuntimeError as e:
        raise ConfigError(f"{source} does not fit the detector of {run / 'config.yaml'} on this data "
                          f"({eval_set.num_classes - 1} classes): {str(e).splitlines()[0]}") from None
    return evaluate_model(cfg, model, lambda m, device, info, amp: evaluate(m, eval_set, cfg, device, info, amp),
                          config_hash(cfg), out, run=str(run), weights=source, overrides=list(overrides),
                          data_skipped=eval_set.skipped)
