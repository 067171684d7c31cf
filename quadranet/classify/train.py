"""One classification run: stages of AdamW + warm-up/cosine, evaluation, accounting, checkpoints, resume, DDP.

Plain and readable in the manner of torchvision's references/classification/train.py: `train` sets the run up
and loops over stages and epochs, `train_one_epoch` is one pass over the training batches, `evaluate`
(`quadranet.classify.evaluate`) the top-1 / top-5 of the eval set. The run folder, checkpoints, resume, clocks,
log and finish step are the shared run layer's (`quadranet.run`). The run folder receives `config.yaml`,
`log.jsonl` (one JSON object per logging step, epoch and evaluation), `metrics.json` (written last, atomically:
its presence means the run completed) and `model.safetensors`. Checkpoints go to `<out>/checkpoints/` (or
`train.checkpoint_dir`); rerunning the same command resumes from the last one, replaying the same batches, so an
interrupted run ends with the metrics of an uninterrupted one.
"""
from __future__ import annotations

import math
from typing import Callable, Optional

import torch
from torch import nn

from .. import convert
from ..config import DEFAULT_TRAINABLE, to_yaml
from ..data import ShardedBatchSampler, iterate
from ..run import Session, run_folder, weight_decay_groups
from .config import RunConfig, StageConfig, config_hash
from .data import build_datasets, num_classes, to_device
from .evaluate import evaluate
from .model import build_model, set_trainable

__all__ = ["make_optimizer", "stages_of", "train", "train_one_epoch", "warmup_cosine"]

SHARE_IMAGES = 512  # eval images (the first ones, in order) on which the quadratic share is measured


def warmup_cosine(step: int, total: int, warmup: int, base_lr: float, min_lr: float) -> float:
    """Linear warm-up to base_lr over `warmup` steps, then cosine decay to min_lr at `total` (ConvNeXt recipe)."""
    if step < warmup:
        return base_lr * (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return min_lr + 0.5 * (base_lr - min_lr) * (1 + math.cos(math.pi * min(1.0, t)))


def make_optimizer(cfg: RunConfig, model: nn.Module, lr: float) -> torch.optim.Optimizer:
    groups = weight_decay_groups(model, cfg.train.weight_decay)
    if cfg.train.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=cfg.train.momentum, nesterov=True)
    return torch.optim.AdamW(groups, lr=lr)


def stages_of(cfg: RunConfig) -> list:
    return cfg.train.stages or [StageConfig(cfg.train.epochs, DEFAULT_TRAINABLE[cfg.method], None)]


def share_batches(dataset, cfg: RunConfig, device: torch.device) -> list:
    """The first SHARE_IMAGES images of `dataset`, in eval batches on `device`."""
    sampler = ShardedBatchSampler(min(len(dataset), SHARE_IMAGES), cfg.data.eval_batch_size, shuffle=False)
    return [to_device(x, y, device, cfg.train.channels_last)[0] for x, y in iterate(dataset, sampler, 0)]


def train(cfg: RunConfig, out, command: Optional[list] = None) -> dict:
    """Run (or resume, or find complete) the training run `cfg` into folder `out`; returns its metrics."""
    return run_folder(cfg, out, config_hash(cfg), _run, command)


def train_one_epoch(run: Session, model: nn.Module, net: nn.Module, criterion: nn.Module,
                    optimizer: torch.optim.Optimizer, train_set, sampler: ShardedBatchSampler,
                    lr_at: Callable[[int], float], mid_epoch_eval: Callable[[], None]) -> None:
    """One epoch of the current stage (the rest of it, after a resume): per batch a forward, backward and
    optimizer step at lr `lr_at(step)`, log lines, a checkpoint every train.checkpoint_every steps, and
    `mid_epoch_eval()` after the steps of train.eval_steps that fall inside the epoch."""
    cfg, progress, device = run.cfg, run.progress, run.device
    steps_per_epoch = len(sampler)
    window = run.begin_epoch(sampler, steps_per_epoch, f"stage {progress.stage} epoch {progress.epoch}")
    for x, y in run.batches(iterate(train_set, sampler, cfg.data.num_workers, pin_memory=device.type == "cuda")):
        x, y = to_device(x, y, device, cfg.train.channels_last)
        lr = lr_at(progress.step)
        for g in optimizer.param_groups:
            g["lr"] = lr
        with run.autocast():
            loss = criterion(net(x), y)
        run.optimizer_step(loss, optimizer, model.parameters())
        log_now, save_now, mean = run.step_done(window, loss, len(y), steps_per_epoch)
        if log_now:
            run.log_step(window, {"step": progress.step, "epoch": progress.epoch, "stage": progress.stage,
                                  "loss": mean, "lr": lr})
        if save_now:
            run.save(model, optimizer)
        if progress.step in cfg.train.eval_steps and progress.batch < steps_per_epoch:  # within the epoch
            mid_epoch_eval()
            run.clock.start("train")
    run.end_epoch()


def _run(run: Session) -> dict:
    cfg, info, device = run.cfg, run.info, run.device
    model, build_info = build_model(cfg, num_classes(cfg))
    train_set, eval_set = build_datasets(cfg, model)
    model.to(device)
    if cfg.train.channels_last:
        model.to(memory_format=torch.channels_last)
    input_size = (cfg.data.channels, cfg.data.resolution, cfg.data.resolution)
    params = sum(p.numel() for p in model.parameters())
    added = sum(p.numel() for p in convert.added_parameters(model))
    flops = convert.model_flops(model, input_size)
    stages = stages_of(cfg)
    progress = run.resume(model, to_yaml(cfg))
    criterion = nn.CrossEntropyLoss(label_smoothing=cfg.train.label_smoothing)

    def run_eval(tag: str) -> dict:
        return run.evaluate(tag, lambda: evaluate(model, eval_set, cfg, device, info, run.amp),
                            {"step": progress.step, "epoch": progress.epoch, "stage": progress.stage})

    def eval_now(tag: str) -> None:
        progress.last_eval = run_eval(tag)
        a1 = progress.last_eval["acc1"]
        progress.best_acc1 = a1 if progress.best_acc1 is None else max(progress.best_acc1, a1)

    def measure_share() -> Optional[dict]:
        return run.probe(lambda: convert.quadratic_share(model, share_batches(eval_set, cfg, device)))

    if progress.initial is None and cfg.train.eval_at_start:
        progress.initial = run_eval("initial")
    if progress.share_start is None:
        progress.share_start = measure_share() or {}

    sampler = ShardedBatchSampler(len(train_set), cfg.data.batch_size, shuffle=True, seed=cfg.seed,
                                  rank=info.rank, world_size=info.world_size, drop_last=True)
    steps_per_epoch = len(sampler)
    epoch_base = 0  # epochs of the stages before the current one
    for s_idx, stage in enumerate(stages):
        if s_idx < progress.stage:
            epoch_base += stage.epochs
            continue
        trainable = set_trainable(model, stage.trainable)
        net = run.wrap(model)  # per stage: DDP reduces the gradients of the parameters trainable when built
        net = torch.compile(net) if cfg.train.compile else net
        lr = stage.lr or cfg.train.lr
        opt = make_optimizer(cfg, model, lr)
        run.restore_optimizer(opt, s_idx)
        run.advice = f"try a lower train.lr (now {lr}) or train.grad_clip"
        total = stage.epochs * steps_per_epoch
        warmup = int(round(cfg.train.warmup_epochs * steps_per_epoch))
        stage_start = epoch_base * steps_per_epoch  # the stage's first optimizer step, counted over all stages
        progress.stage = s_idx
        progress.trainable[s_idx:] = [trainable]
        for epoch in range(progress.epoch - epoch_base, stage.epochs):
            train_one_epoch(run, model, net, criterion, opt, train_set, sampler,
                            lambda step: warmup_cosine(step - stage_start, total, warmup, lr, cfg.train.min_lr),
                            lambda: eval_now("step"))
            final_epoch = s_idx == len(stages) - 1 and epoch == stage.epochs - 1
            if progress.epoch % cfg.train.eval_every == 0 or progress.step in cfg.train.eval_steps or final_epoch:
                eval_now("epoch")
            run.log_epoch({"step": progress.step, "epoch": progress.epoch, "stage": s_idx,
                           "trainable_params": trainable})
            if not final_epoch:
                run.save(model, opt)
        epoch_base += stage.epochs

    share_end = measure_share()
    return run.finish(model, {
        "name": cfg.name or run.out.name, "method": cfg.method, "arch": cfg.model.arch, "dataset": cfg.data.dataset,
        "seed": cfg.seed, "config_hash": run.chash, "status": "complete",
        "acc1": progress.last_eval["acc1"], "acc5": progress.last_eval["acc5"], "best_acc1": progress.best_acc1,
        "initial_acc1": (progress.initial or {}).get("acc1"), "initial_acc5": (progress.initial or {}).get("acc5"),
        "epochs": progress.epoch, "steps": progress.step, "images_seen": progress.images,
        "train_images": len(train_set), "eval_images": progress.last_eval["eval_images"], **run.cost_fields(),
        "params": params, "trainable_params": trainable, "trainable_params_stages": progress.trainable,
        "params_added": added, "flops": flops,
        "quadratic_share": {"start": progress.share_start, "end": share_end} if share_end else None,
        "input_size": list(input_size), "resumes": progress.resumes, **build_info, "provenance": run.provenance(),
    })
