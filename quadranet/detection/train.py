"""One detection run: train a torchvision detector on a (quadratized) timm backbone, evaluate with COCOeval.

Laid out as `quadranet.classify.train` (and torchvision's references): `train` sets the run up and loops over
epochs, `train_one_epoch` is one pass over the training batches, `evaluate` (`quadranet.detection.evaluate`) the
COCO metrics of the eval set. The run layer is classification's (`quadranet.run`): the run folder receives
`config.yaml`, `log.jsonl` (one JSON object per logging step, epoch and evaluation), `metrics.json` (written last
and atomically: its presence means the run completed), `model.safetensors`, and checkpoints in `<out>/checkpoints/`
(or `train.checkpoint_dir`) from which a rerun of the same command resumes, replaying the same batches and flips
(they depend only on seed and epoch). Optimisation follows Detectron2 / torchvision's references: linear warm-up,
then lr x0.1 at fixed fractions of training (the 1x / 3x schedules), weight decay on kernels only. DDP under
torchrun: each rank trains on its share of every global batch; evaluation gathers the detections of all ranks on
rank 0 for COCOeval.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch
from torch import nn

from .. import convert
from ..config import to_yaml
from ..data import ShardedBatchSampler
from ..run import Session, run_folder, weight_decay_groups
from ..run.distributed import barrier
from .coco import CocoDetection
from .config import DetectionConfig, config_hash, default_trainable
from .data import build_datasets, loader, to_device
from .evaluate import empty_metrics, evaluate
from .model import build_model, set_trainable

__all__ = ["lr_factor", "make_optimizer", "train", "train_one_epoch"]


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


def train(cfg: DetectionConfig, out, command: Optional[list] = None) -> dict:
    """Run (or resume, or find complete) detection run `cfg` into folder `out`; returns its metrics."""
    return run_folder(cfg, out, config_hash(cfg), _run, command)


def train_one_epoch(run: Session, model: nn.Module, net: nn.Module, optimizer: torch.optim.Optimizer,
                    train_set: CocoDetection, sampler: ShardedBatchSampler, lr_at: Callable[[int], float]) -> None:
    """One epoch (the rest of it, after a resume): per batch a forward (the detector returns its losses),
    backward and optimizer step at lr `lr_at(step)`, log lines, and a checkpoint every train.checkpoint_every
    steps."""
    cfg, progress, device = run.cfg, run.progress, run.device
    steps_per_epoch = len(sampler)
    train_set.set_epoch(progress.epoch)
    window = run.begin_epoch(sampler, steps_per_epoch, f"epoch {progress.epoch}", dtype=torch.float64)
    for images, targets in run.batches(loader(train_set, sampler, cfg, device)):
        images, targets = to_device(images, targets, device)
        lr = lr_at(progress.step)
        for g in optimizer.param_groups:
            g["lr"] = lr
        with run.autocast():
            loss_dict = net(images, targets)
        loss = sum(loss_dict.values())
        run.optimizer_step(loss, optimizer, [p for p in model.parameters() if p.requires_grad])
        log_now, save_now, mean = run.step_done(window, loss, len(images), steps_per_epoch, loss_dict)
        if log_now:
            run.log_step(window, {"step": progress.step, "epoch": progress.epoch, "loss": mean,
                                  **window.parts_mean(), "lr": lr})
        if save_now:
            run.save(model, optimizer)
    run.end_epoch()


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
    model, build_info = build_model(cfg, train_set.num_classes)
    params = sum(p.numel() for p in model.parameters())
    added = sum(p.numel() for p in convert.quadratic_parameters(model))
    flops = _backbone_flops(model, cfg.data.min_size)
    trainable = set_trainable(model, default_trainable(cfg))
    model.to(device)
    progress = run.resume(model, to_yaml(cfg))
    net = run.wrap(model)
    opt = make_optimizer(cfg, model)
    run.restore_optimizer(opt)
    run.advice = f"try a lower train.lr (now {t.lr}), train.grad_clip, or more train.warmup_steps"

    def run_eval(tag: str) -> dict:
        return run.evaluate(tag, lambda: evaluate(model, eval_set, cfg, device, info, run.amp),
                            {"step": progress.step, "epoch": progress.epoch})

    if progress.initial is None and t.eval_at_start:
        progress.initial = run_eval("initial")
    sampler = ShardedBatchSampler(len(train_set), cfg.data.batch_size, shuffle=True, seed=cfg.seed,
                                  rank=info.rank, world_size=info.world_size, drop_last=True)
    total = cfg.epochs * len(sampler)
    while progress.epoch < cfg.epochs:
        train_one_epoch(run, model, net, opt, train_set, sampler,
                        lambda step: t.lr * lr_factor(step, total, t.warmup_steps, t.warmup_factor, cfg.lr_steps))
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
