"""One detection run: train a torchvision detector on a (quadratized) timm backbone, evaluate with COCOeval.

The same accounting and run folder as classification (`quadranet.engine.train`): `config.yaml`,
`log.jsonl` (one JSON object per logging step, epoch and evaluation), `metrics.json` (written last and
atomically: its presence means the run completed), `model.safetensors`, and checkpoints in
`<out>/checkpoints/` (or `train.checkpoint_dir`) from which a rerun of the same command resumes,
replaying the same batches and flips (they depend only on seed and epoch). Optimisation follows
Detectron2 / torchvision's references: linear warm-up, then lr x0.1 at fixed fractions of training
(the 1x / 3x schedules), weight decay on kernels only. DDP under torchrun: each rank trains on its share
of every global batch; evaluation gathers the detections of all ranks on rank 0 for COCOeval.
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import torch
from torch import nn
from torch.utils.data import DataLoader

from .. import convert, io
from ..config import ConfigError
from ..data.loaders import ShardedBatchSampler
from ..engine import accounting, checkpoint
from ..engine.distributed import DistInfo, all_reduce_sum, barrier
from ..engine.train import (Logger, NonFiniteLossError, _amp_dtype, _rng_state, resolve_device, restore, run_folder,
                            seed_everything)
from .coco import CocoDetection, coco_paths, collate
from .config import DetectionConfig, config_hash, default_trainable, to_yaml
from .evaluate import coco_evaluate, empty_metrics, to_coco_results
from .models import build_detector, set_trainable

__all__ = ["build_datasets", "check_detection_data", "evaluate_detection_run", "lr_factor", "train_detection"]

WEIGHTS = "model.safetensors"
COCO_ENV = "QUADRANET_COCO"
PROCESS_START = time.perf_counter() - (accounting.process_age() or 0.0)


@dataclass
class Progress:
    """Where a detection run stands; saved in every checkpoint."""
    epoch: int = 0  # epochs completed
    batch: int = 0  # batches completed in the current epoch
    step: int = 0  # optimizer steps
    images: int = 0
    initial: Optional[dict] = None
    last_eval: Optional[dict] = None
    seconds: dict = field(default_factory=dict)
    energy_joules: Optional[float] = None
    resumes: int = 0
    log: list = field(default_factory=list)


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
    """Weight decay on kernels and matrices only, not on norms and biases."""
    t = cfg.train
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": t.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
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
    p = next(model.parameters())
    was = model.training
    model.eval()
    try:
        return convert._count_flops(model.backbone, torch.randn(1, 3, size, size, device=p.device, dtype=p.dtype))
    except Exception:  # noqa: BLE001 (a FLOP count is a nicety; never fail a run over it)
        return None
    finally:
        model.train(was)


def _run(cfg: DetectionConfig, out: Path, chash: str, info: DistInfo, command) -> dict:
    device = resolve_device(cfg, info)
    clock = accounting.DeviceClock(device, info.world_size)
    clock.seconds["startup"] = (time.perf_counter() - PROCESS_START) * info.world_size
    clock.start("startup")
    energy = accounting.EnergyMeter(device)
    ckpt_dir = Path(cfg.train.checkpoint_dir or out / "checkpoints")
    state = checkpoint.load_checkpoint(ckpt_dir, chash)

    seed_everything(cfg.seed)
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
    progress = Progress()
    opt = make_optimizer(cfg, model)
    amp = _amp_dtype(cfg, device)
    scaler = torch.amp.GradScaler(device.type, enabled=amp is torch.float16)
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        scaler.load_state_dict(state["scaler"])
        progress = restore(progress, state, clock, energy)
    if info.is_main:
        out.mkdir(parents=True, exist_ok=True)
        io.write_text(out / "config.yaml", to_yaml(cfg))
    log = Logger(out, progress, cfg.train.progress, info.is_main)
    net = model
    if info.enabled:
        net = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    def snapshot() -> dict:
        progress.seconds = clock.snapshot()
        progress.energy_joules = energy.update()
        return progress.__dict__.copy()

    def save() -> None:
        if info.is_main:
            checkpoint.save_checkpoint(ckpt_dir, {
                "config_hash": chash, "model": model.state_dict(), "optimizer": opt.state_dict(),
                "scaler": scaler.state_dict(), "rng": _rng_state(), "progress": snapshot()})

    def run_eval(tag: str) -> dict:
        clock.start("eval")
        result = evaluate(model, eval_set, cfg, device, info, amp)
        clock.stop()
        log.write({"event": "eval", "tag": tag, "step": progress.step, "epoch": progress.epoch, **result,
                   "device_s": clock.seconds["train"] + clock.seconds["eval"],
                   "wall_s": time.perf_counter() - PROCESS_START})
        return result

    clock.stop()
    if progress.initial is None and cfg.train.eval_at_start:
        progress.initial = run_eval("initial")

    sampler = ShardedBatchSampler(len(train_set), cfg.data.batch_size, shuffle=True, seed=cfg.seed,
                                  rank=info.rank, world_size=info.world_size, drop_last=True)
    steps_per_epoch = len(sampler)
    epochs = cfg.epochs
    total = epochs * steps_per_epoch
    t = cfg.train
    for epoch in range(progress.epoch, epochs):
        sampler.set_epoch(epoch, start=progress.batch)
        train_set.set_epoch(epoch)
        log.open_bar(steps_per_epoch, progress.batch, f"epoch {epoch}")
        clock.start("train")
        t_log, n_log, img_log = time.perf_counter(), 0, 0
        loss_sum = torch.zeros((), device=device, dtype=torch.float64)
        parts_sum: dict = {}
        for images, targets in _loader(train_set, sampler, cfg, device):
            images, targets = _to_device(images, targets, device)
            lr = t.lr * lr_factor(progress.step, total, t.warmup_steps, t.warmup_factor, cfg.lr_steps)
            for g in opt.param_groups:
                g["lr"] = lr
            with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
                loss_dict = net(images, targets)
            loss = sum(loss_dict.values())
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if t.grad_clip:
                scaler.unscale_(opt)
                nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], t.grad_clip)
            scaler.step(opt)
            scaler.update()
            loss_sum += loss.detach().double()
            for k, v in loss_dict.items():
                parts_sum[k] = parts_sum.get(k, 0.0) + v.detach().double()
            progress.batch += 1
            progress.step += 1
            progress.images += len(images) * info.world_size
            n_log += 1
            img_log += len(images) * info.world_size
            last = progress.batch == steps_per_epoch
            log.tick()
            log_now = progress.step % t.log_every == 0 or last
            save_now = progress.step % t.checkpoint_every == 0 and not last
            if log_now or save_now:
                mean = (all_reduce_sum(loss_sum.clone(), info) / (n_log * info.world_size)).item()
                if not math.isfinite(mean):
                    raise NonFiniteLossError(
                        f"loss became {mean} by step {progress.step} (epoch {epoch}); the run stopped and kept "
                        f"its last good checkpoint in {ckpt_dir}; try a lower train.lr (now {t.lr}), "
                        f"train.grad_clip, or more train.warmup_steps")
            if log_now:
                accounting.synchronize(device)
                dt = time.perf_counter() - t_log
                parts = {k: (all_reduce_sum(v.clone(), info) / (n_log * info.world_size)).item()
                         for k, v in sorted(parts_sum.items())}
                log.write({"event": "step", "step": progress.step, "epoch": epoch, "loss": mean, **parts, "lr": lr,
                           "wall_s": time.perf_counter() - PROCESS_START,
                           "device_s": clock.cost(),
                           "images_per_s": img_log / dt, "peak_mem_mb": accounting.peak_memory_mb(device)})
                t_log, n_log, img_log = time.perf_counter(), 0, 0
                loss_sum.zero_()
                parts_sum = {}
            if save_now:
                save()
        clock.stop()
        log.close_bar()
        progress.epoch += 1
        progress.batch = 0
        final = progress.epoch == epochs
        if final or (t.eval_every and progress.epoch % t.eval_every == 0):
            progress.last_eval = run_eval("final" if final else "epoch")
        log.write({"event": "epoch", "step": progress.step, "epoch": progress.epoch, "trainable_params": trainable,
                   "device_s": clock.seconds["train"] + clock.seconds["eval"],
                   "wall_s": time.perf_counter() - PROCESS_START, "peak_mem_mb": accounting.peak_memory_mb(device)})
        if not final:
            save()
    if progress.last_eval is None:  # resumed after the last epoch finished but before metrics were written
        progress.last_eval = run_eval("final")

    seconds = {k: round(v, 3) for k, v in clock.seconds.items()}
    seconds["total"] = round(sum(seconds.values()), 3)
    ev = progress.last_eval
    initial = progress.initial or {}
    metrics = {
        "name": cfg.name or out.name, "task": "detection", "method": cfg.method, "arch": cfg.model.backbone,
        "detector": cfg.model.detector, "dataset": cfg.data.dataset, "seed": cfg.seed, "config_hash": chash,
        "status": "complete",
        **{k: ev.get(k) for k in empty_metrics()},
        "initial_box_ap": initial.get("box_ap"), "initial_mask_ap": initial.get("mask_ap"),
        "epochs": progress.epoch, "steps": progress.step, "images_seen": progress.images,
        "train_images": len(train_set), "eval_images": ev["eval_images"],
        "data_skipped": {"train": train_set.skipped, "val": eval_set.skipped},
        "device_seconds": seconds, "device_hours": seconds["total"] / 3600, "num_devices": info.world_size,
        "device_type": device.type, "energy_joules": energy.update(), "energy_source": energy.source,
        "peak_mem_mb": accounting.peak_memory_mb(device),
        "params": params, "trainable_params": trainable, "params_added": added, "backbone_flops": flops,
        "input_size": [3, cfg.data.min_size, cfg.data.min_size], "resumes": progress.resumes, **build_info,
        "provenance": accounting.provenance(cfg.to_dict(), chash, cfg.seed, info.world_size, device.type, command),
    }
    if info.is_main:
        from safetensors.torch import save_file

        with io.atomic_path(out / WEIGHTS) as tmp:
            save_file({k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}, str(tmp))
        io.write_json(out / "metrics.json", metrics)
        if not t.keep_checkpoint:
            (ckpt_dir / checkpoint.LAST).unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                ckpt_dir.rmdir()
    barrier(info)
    return metrics


def evaluate_detection_run(run, overrides: tuple = (), out: Optional[str] = None) -> dict:
    """COCO metrics of the detector in run folder `run` (its config.yaml and model.safetensors, or, for a
    run still in progress, its last checkpoint), on its eval data or other data (`data.*` overrides)."""
    from safetensors.torch import load_file

    from .config import load_detection_config

    run = Path(run)
    if not (run / "config.yaml").is_file():
        raise FileNotFoundError(f"{run / 'config.yaml'} not found; expected the --out folder of a quadranet "
                                f"detect train run")
    bad = [o for o in overrides if not (o.startswith("data.") or o.startswith("train.device")
                                        or o.startswith("train.amp"))]
    if bad:
        raise ConfigError(f"eval overrides must be data.* (or train.device / train.amp), got {bad}")
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
    device = resolve_device(cfg, DistInfo())
    model.to(device)
    clock = accounting.DeviceClock(device, 1)
    clock.start("eval")
    result = evaluate(model, eval_set, cfg, device, DistInfo(), _amp_dtype(cfg, device))
    clock.stop()
    result.update(run=str(run), weights=source, overrides=list(overrides), data_skipped=eval_set.skipped,
                  device_seconds=clock.seconds["eval"],
                  provenance=accounting.provenance(cfg.to_dict(), config_hash(cfg), cfg.seed, 1, device.type))
    if out:
        io.write_json(out, result)
    return result
