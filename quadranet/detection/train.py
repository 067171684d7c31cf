"""One detection run: train a torchvision detector on a (quadratized) timm backbone, evaluate with COCOeval.

The same run layer as classification (`quadranet.run`): run folder, accounting, checkpoints: `config.yaml`,
`log.jsonl` (one JSON object per logging step, epoch and evaluation), `metrics.json` (written last and
atomically: its presence means the run completed), `model.safetensors`, and checkpoints in
`<out>/checkpoints/` (or `train.checkpoint_dir`) from which a rerun of the same command resumes,
replaying the same batches and flips (they depend only on seed and epoch). Optimisation follows
Detectron2 / torchvision's references: linear warm-up, then lr x0.1 at fixed fractions of training
(the 1x / 3x schedules), weight decay on kernels only. DDP under torchrun: each rank trains on its share
of every global batch; evaluation gathers the detections of all ranks on rank 0 for COCOeval.
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Optional

import torch
from torch import nn
from torch.utils.data import DataLoader

from .. import convert
from ..config import ConfigError
from ..data.loaders import ShardedBatchSampler
from ..models.build import WEIGHTS
from ..run import checkpoint
from ..run.distributed import DistInfo, barrier
from ..run.session import Session, check_eval_overrides, evaluate_model, run_folder, weight_decay_groups
from .coco import CocoDetection, coco_paths, collate
from .config import DetectionConfig, config_hash, default_trainable, to_yaml
from .evaluate import coco_evaluate, empty_metrics, to_coco_results
from .models import build_detector, set_trainable

__all__ = ["build_datasets", "check_detection_data", "evaluate_detection_run", "lr_factor", "train_detection"]

COCO_ENV = "QUADRANET_COCO"


def split_paths(cfg: DetectionConfig) -> dict:
    """{'train': (images, ann), 'val': (images, ann)} of the run's data; builds the canvas set if needed."""
    d = cfg.data
    if d.dataset == "fashion_mnist_canvas":
        from .synthetic import CanvasSpec, build_canvas_coco

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


def check_detection_data(cfg: DetectionConfig) -> None:
    """Raise a clear error when the run's data is not where its config says, without reading any image."""
    d = cfg.data
    if d.dataset == "fashion_mnist_canvas":  # the canvas set is built from Fashion-MNIST when first needed
        from ..data import check_data

        check_data("fashion_mnist", d.fashion_mnist_root)
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


def lr_factor(step: int, total: int, warmup: int, warmup_factor: float, steps: tuple) -> float:
    """Detectron2's WarmupMultiStepLR: linear warm-up from `warmup_factor`, then x0.1 at each fraction of
    `steps` of `total` optimizer steps."""
    f = 1.0
    if step < warmup:
        alpha = step / warmup
        f = warmup_factor * (1 - alpha) + alpha
    return f * 0.1 ** sum(step >= int(round(s * total)) for s in steps)


def make_optimizer(cfg: DetectionConfig, model: nn.Module) -> torch.optim.Optimizer:
    t = cfg.train
    groups = weight_decay_groups(model, t.weight_decay)
    if t.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=t.lr, momentum=t.momentum)
    return torch.optim.AdamW(groups, lr=t.lr)


def _loader(dataset, sampler, cfg: DetectionConfig, device: torch.device) -> DataLoader:
    # its own generator: a DataLoader iterator draws its base seed from the global RNG otherwise, and a run
    # resumed mid-epoch (one more iterator) would then sample differently from an uninterrupted one
    return DataLoader(dataset, batch_sampler=sampler, collate_fn=collate, num_workers=cfg.data.num_workers,
                      pin_memory=device.type == "cuda", generator=torch.Generator().manual_seed(0))


def _to_device(images, targets, device):
    images = [im.to(device, non_blocking=True) for im in images]
    targets = [{k: (v.to(device, non_blocking=True) if torch.is_tensor(v) else v) for k, v in t.items()}
               for t in targets]
    return images, targets


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
        for images, targets in _loader(dataset, sampler, cfg, device):
            images = [im.to(device, non_blocking=True) for im in images]
            with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
                outputs = model(images)
            ids = [t["image_id"] for t in targets]
            results += to_coco_results(outputs, ids, dataset.label_to_category, masks=cfg.masks)
            seen += ids
    finally:
        model.train(was)
    if info.enabled:
        import torch.distributed as dist

        gathered = [None] * info.world_size
        dist.all_gather_object(gathered, (results, seen))
        results = [r for part in gathered for r in part[0]]
        seen = sorted({i for part in gathered for i in part[1]})
    metrics = empty_metrics()
    if info.is_main:
        metrics.update(coco_evaluate(dataset.coco, results, ("bbox", "segm") if cfg.masks else ("bbox",), seen))
    metrics.update(eval_images=len(seen), detections=len(results))
    return metrics


def train_detection(cfg: DetectionConfig, out, command: Optional[list] = None) -> dict:
    """Run (or resume, or find complete) detection run `cfg` into folder `out`; returns its metrics."""
    return run_folder(cfg, out, config_hash(cfg), _run, command)


def _backbone_flops(model: nn.Module, size: int) -> Optional[int]:
    """Forward FLOPs of backbone + FPN on one size x size image (the detection heads depend on the detections)."""
    try:
        return convert.model_flops(model.backbone, (3, size, size))
    except Exception:  # noqa: BLE001 (a FLOP count is a nicety; never fail a run over it)
        return None


def _run(run: Session) -> dict:
    cfg, info, device, t = run.cfg, run.info, run.device, run.cfg.train
    if info.is_main:
        train_set, eval_set = build_datasets(cfg)  # rank 0 writes the canvas set first
    barrier(info)
    if not info.is_main:
        train_set, eval_set = build_datasets(cfg)
    model, build_info = build_detector(cfg, train_set.num_classes)
    params = sum(p.numel() for p in model.parameters())
    added = sum(p.numel() for p in convert.quadratic_parameters(model))
    flops = _backbone_flops(model, cfg.data.min_size)
    trainable = set_trainable(model, default_trainable(cfg))
    model.to(device)
    opt = make_optimizer(cfg, model)
    run.restore_optimizer(opt)
    progress = run.resume(model, to_yaml(cfg))
    run.advice = f"try a lower train.lr (now {t.lr}), train.grad_clip, or more train.warmup_steps"
    net = run.wrap(model)

    def run_eval(tag: str) -> dict:
        return run.evaluate(tag, lambda: evaluate(model, eval_set, cfg, device, info, run.amp),
                            {"step": progress.step, "epoch": progress.epoch})

    if progress.initial is None and t.eval_at_start:
        progress.initial = run_eval("initial")
    sampler = ShardedBatchSampler(len(train_set), cfg.data.batch_size, shuffle=True, seed=cfg.seed,
                                  rank=info.rank, world_size=info.world_size, drop_last=True)
    steps_per_epoch = len(sampler)
    total = cfg.epochs * steps_per_epoch
    for epoch in range(progress.epoch, cfg.epochs):
        train_set.set_epoch(epoch)
        window = run.begin_epoch(sampler, steps_per_epoch, f"epoch {epoch}", dtype=torch.float64)
        for images, targets in run.batches(_loader(train_set, sampler, cfg, device)):
            images, targets = _to_device(images, targets, device)
            lr = t.lr * lr_factor(progress.step, total, t.warmup_steps, t.warmup_factor, cfg.lr_steps)
            for g in opt.param_groups:
                g["lr"] = lr
            with run.autocast():
                loss_dict = net(images, targets)
            loss = sum(loss_dict.values())
            run.optimizer_step(loss, opt, [p for p in model.parameters() if p.requires_grad])
            log_now, save_now, mean = run.step_done(window, loss, len(images), steps_per_epoch, loss_dict)
            if log_now:
                run.log_step(window, {"step": progress.step, "epoch": epoch, "loss": mean, **window.parts_mean(),
                                      "lr": lr})
            if save_now:
                run.save(model, opt)
        run.end_epoch()
        final = progress.epoch == cfg.epochs
        if final or (t.eval_every and progress.epoch % t.eval_every == 0):
            progress.last_eval = run_eval("final" if final else "epoch")
        run.log_epoch({"step": progress.step, "epoch": progress.epoch, "trainable_params": trainable})
        if not final:
            run.save(model, opt)
    if progress.last_eval is None:  # resumed after the last epoch finished but before metrics were written
        progress.last_eval = run_eval("final")

    ev, initial = progress.last_eval, progress.initial or {}
    return run.finish(model, {
        "name": cfg.name or run.out.name, "task": "detection", "method": cfg.method, "arch": cfg.model.backbone,
        "detector": cfg.model.detector, "dataset": cfg.data.dataset, "seed": cfg.seed, "config_hash": run.chash,
        "status": "complete", **{k: ev.get(k) for k in empty_metrics()},
        "initial_box_ap": initial.get("box_ap"), "initial_mask_ap": initial.get("mask_ap"),
        "epochs": progress.epoch, "steps": progress.step, "images_seen": progress.images,
        "train_images": len(train_set), "eval_images": ev["eval_images"],
        "data_skipped": {"train": train_set.skipped, "val": eval_set.skipped}, **run.cost_fields(),
        "params": params, "trainable_params": trainable, "params_added": added, "backbone_flops": flops,
        "input_size": [3, cfg.data.min_size, cfg.data.min_size], "resumes": progress.resumes, **build_info,
        "provenance": run.provenance(),
    })


def evaluate_detection_run(run, overrides: tuple = (), out: Optional[str] = None) -> dict:
    """COCO metrics of the detector in run folder `run` (its config.yaml and model.safetensors, or, for a
    run still in progress, its last checkpoint), on its eval data or other data (`data.*` overrides)."""
    from safetensors.torch import load_file

    from .config import load_detection_config

    run = Path(run)
    if not (run / "config.yaml").is_file():
        raise FileNotFoundError(f"{run / 'config.yaml'} not found; expected the --out folder of a quadranet "
                                f"detect train run")
    check_eval_overrides(overrides, ("data.", "train.device", "train.amp"))
    cfg = load_detection_config(run / "config.yaml", overrides)
    if (run / WEIGHTS).is_file():
        weights, source = load_file(str(run / WEIGHTS)), str(run / WEIGHTS)
    else:
        ckpt_dir = Path(cfg.train.checkpoint_dir or run / "checkpoints")
        state = checkpoint.load_checkpoint(ckpt_dir, config_hash(load_detection_config(run / "config.yaml")))
        if state is None:
            raise FileNotFoundError(f"{run} holds neither {WEIGHTS} nor a checkpoint in {ckpt_dir}")
        weights, source = state["model"], str(ckpt_dir / checkpoint.LAST)
    _, eval_set = build_datasets(cfg, train=False)
    model, _ = build_detector(cfg, eval_set.num_classes, weights=False)
    try:
        model.load_state_dict(weights)
    except RuntimeError as e:
        raise ConfigError(f"{source} does not fit the detector of {run / 'config.yaml'} on this data "
                          f"({eval_set.num_classes - 1} classes): {str(e).splitlines()[0]}") from None
    return evaluate_model(cfg, model, lambda m, device, info, amp: evaluate(m, eval_set, cfg, device, info, amp),
                          config_hash(cfg), out, run=str(run), weights=source, overrides=list(overrides),
                          data_skipped=eval_set.skipped)
