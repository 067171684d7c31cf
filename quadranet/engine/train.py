"""One training run: stages of AdamW + warm-up/cosine, evaluation, accounting, checkpoints, resume, DDP.

Plain and readable in the manner of torchvision's references. The run folder receives `config.yaml`,
`log.jsonl` (one JSON object per logging step, epoch and evaluation), `metrics.json` (written last,
atomically: its presence means the run completed) and `model.safetensors`. Checkpoints go to
`<out>/checkpoints/` (or `train.checkpoint_dir`); rerunning the same command resumes from the last one,
replaying the same batches (the data order depends only on seed and epoch), so an interrupted run ends
with the metrics of an uninterrupted one.
"""
from __future__ import annotations

import contextlib
import json
import math
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .. import io
from ..config import RunConfig, config_hash, to_yaml
from ..data import ShardedBatchSampler, iterate
from . import accounting, checkpoint
from ..convert import quadratic_share
from .build import DEFAULT_TRAINABLE, WEIGHTS, build_data, build_model, count_flops, set_trainable
from .distributed import DistInfo, all_reduce_sum, barrier, cleanup, init_distributed

# start-up counts from the process start where the OS says when that was, else from this import
PROCESS_START = time.perf_counter() - (accounting.process_age() or 0.0)


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite."""


@dataclass
class Progress:
    """Where a run stands; saved in every checkpoint."""
    stage: int = 0
    epoch: int = 0  # epochs completed over all stages
    batch: int = 0  # batches completed in the current epoch
    step: int = 0  # optimizer steps over all stages
    images: int = 0
    best_acc1: Optional[float] = None
    initial: Optional[dict] = None  # eval before training
    share_start: Optional[dict] = None  # quadratic share before training ({} for a model without such terms)
    last_eval: Optional[dict] = None
    seconds: dict = field(default_factory=dict)  # DeviceClock.seconds
    energy_joules: Optional[float] = None
    resumes: int = 0
    trainable: list = field(default_factory=list)  # trainable parameters of each stage begun
    log: list = field(default_factory=list)  # every log line so far (log.jsonl is rewritten from it on resume)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _rng_state() -> dict:
    """RNG states as tensors (a weights_only checkpoint holds nothing else)."""
    _, keys, pos, *_ = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "numpy": torch.from_numpy(np.append(keys, pos).astype(np.int64)),
             "python": torch.tensor(random.getstate()[1], dtype=torch.int64)}
    if torch.cuda.is_available():
        state["cuda"] = torch.stack(torch.cuda.get_rng_state_all())
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np_state = state["numpy"].numpy()
    np.random.set_state(("MT19937", np_state[:-1].astype(np.uint32), int(np_state[-1]), 0, 0.0))
    random.setstate((3, tuple(int(v) for v in state["python"].tolist()), None))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(list(state["cuda"]))


def resolve_device(cfg: RunConfig, info: DistInfo) -> torch.device:
    want = cfg.train.device
    if want == "auto":
        want = "cuda" if torch.cuda.is_available() else "cpu"
    if want == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("train.device='cuda' but no CUDA device is available; use train.device=cpu or auto")
        return torch.device("cuda", info.local_rank)
    return torch.device("cpu")


def _amp_dtype(cfg: RunConfig, device: torch.device) -> Optional[torch.dtype]:
    amp = cfg.train.amp
    if amp == "auto":
        return torch.bfloat16 if device.type == "cuda" else None
    return {"bf16": torch.bfloat16, "fp16": torch.float16, "none": None}[amp]


def warmup_cosine(step: int, total: int, warmup: int, base_lr: float, min_lr: float) -> float:
    """Linear warm-up to base_lr over `warmup` steps, then cosine decay to min_lr at `total` (ConvNeXt recipe)."""
    if step < warmup:
        return base_lr * (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return min_lr + 0.5 * (base_lr - min_lr) * (1 + math.cos(math.pi * min(1.0, t)))


def make_optimizer(cfg: RunConfig, model: nn.Module, lr: float) -> torch.optim.Optimizer:
    """Weight decay on matrices and kernels only, not on norms and biases (as timm does)."""
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": cfg.train.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if cfg.train.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=cfg.train.momentum, nesterov=True)
    return torch.optim.AdamW(groups, lr=lr)


def stages_of(cfg: RunConfig) -> list:
    from ..config import StageConfig

    return cfg.train.stages or [StageConfig(cfg.train.epochs, DEFAULT_TRAINABLE[cfg.method], None)]


class Logger:
    """log.jsonl lines (rank 0) and, per `train.progress`, a tqdm bar or plain lines on stderr."""

    def __init__(self, out: Path, progress: Progress, mode: str, enabled: bool):
        self.path, self.progress, self.enabled = out / "log.jsonl", progress, enabled
        if mode == "auto":
            mode = "bar" if sys.stderr.isatty() else "lines"
        self.mode, self.bar = mode, None
        if enabled:  # rewrite what the checkpoint knows, dropping lines of work that will be redone
            io.write_text(self.path, "".join(json.dumps(r) + "\n" for r in progress.log))

    def open_bar(self, total: int, initial: int, desc: str) -> None:
        if self.enabled and self.mode == "bar":
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=initial, desc=desc, dynamic_ncols=True, leave=False)

    def close_bar(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def tick(self) -> None:
        if self.bar is not None:
            self.bar.update(1)

    def write(self, record: dict) -> None:
        if not self.enabled:
            return
        record = {k: (round(v, 6) if isinstance(v, float) else v) for k, v in record.items()}
        self.progress.log.append(record)
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        if self.mode == "lines" or (self.mode == "bar" and record["event"] != "step"):
            text = " ".join(f"{k}={v}" for k, v in record.items())
            (self.bar.write if self.bar is not None else lambda s: print(s, file=sys.stderr, flush=True))(text)


@torch.no_grad()
def evaluate(model: nn.Module, dataset, cfg: RunConfig, device: torch.device, info: DistInfo,
             amp: Optional[torch.dtype]) -> dict:
    """Top-1 / top-5 accuracy (percent) and mean cross-entropy over the whole eval set, summed over ranks."""
    was = model.training
    model.eval()
    sampler = ShardedBatchSampler(len(dataset), cfg.data.eval_batch_size * info.world_size, shuffle=False,
                                  rank=info.rank, world_size=info.world_size)
    totals = torch.zeros(4, dtype=torch.float64, device=device)  # loss sum, top1, top5, count
    for x, y in iterate(dataset, sampler, cfg.data.num_workers):
        x, y = _to_device(x, y, device, cfg)
        with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
            logits = model(x)
        logits = logits.float()
        k = min(5, logits.shape[1])
        top = logits.topk(k, dim=1).indices
        hit = top == y[:, None]
        totals += torch.stack([F.cross_entropy(logits, y, reduction="sum").double(), hit[:, 0].sum().double(),
                               hit.any(1).sum().double(), torch.tensor(float(len(y)), device=device, dtype=torch.float64)])
    all_reduce_sum(totals, info)
    model.train(was)
    loss, top1, top5, n = totals.tolist()
    return {"acc1": 100 * top1 / n, "acc5": 100 * top5 / n, "eval_loss": loss / n, "eval_images": int(n)}


SHARE_IMAGES = 512  # eval images (the first ones, in order) on which the quadratic share is measured


def share_batches(dataset, cfg: RunConfig, device: torch.device) -> list:
    """The first SHARE_IMAGES images of `dataset`, in eval batches on `device`."""
    sampler = ShardedBatchSampler(min(len(dataset), SHARE_IMAGES), cfg.data.eval_batch_size, shuffle=False)
    return [_to_device(x, y, device, cfg)[0] for x, y in iterate(dataset, sampler, 0)]


def _to_device(x, y, device, cfg):
    x = x.to(device, non_blocking=True)
    if device.type == "cuda" and cfg.train.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x, y.to(device, non_blocking=True)


def run_folder(cfg, out, chash: str, body, command: Optional[list] = None) -> dict:
    """The metrics of run `cfg` in folder `out`: those already there if it is complete, else what
    `body(cfg, out, chash, info, command)` returns, run inside the process group (torchrun) if any.
    Shared by classification and detection runs."""
    out = Path(out)
    metrics_path = out / "metrics.json"
    if metrics_path.exists():
        done = json.loads(metrics_path.read_text())
        if done.get("config_hash") == chash:
            print(f"run {out} is complete (config {chash}); nothing to do", file=sys.stderr)
            return done
        raise checkpoint.CheckpointError(
            f"{metrics_path} holds a finished run with config hash {done.get('config_hash')}, not {chash}; "
            f"use another --out or delete that folder")
    info = init_distributed("cuda" if cfg.train.device != "cpu" and torch.cuda.is_available() else "cpu")
    try:
        return body(cfg, out, chash, info, command)
    finally:
        cleanup(info)


def restore(progress, state: dict, clock: accounting.DeviceClock, energy: accounting.EnergyMeter):
    """The run's Progress (of `progress`'s class) from checkpoint `state`, with the clock and energy meter
    carried on from it. Work done after that checkpoint by the killed attempt is lost and not counted."""
    _set_rng_state(state["rng"])
    progress = type(progress)(**state["progress"])
    progress.resumes += 1
    if energy.joules is not None and progress.energy_joules is not None:
        energy.joules = progress.energy_joules
    clock.seconds.update({k: v for k, v in progress.seconds.items() if k != "startup"})
    clock.seconds["startup"] += progress.seconds.get("startup", 0.0)
    return progress


def train(cfg: RunConfig, out, command: Optional[list] = None) -> dict:
    """Run (or resume, or find complete) the training run `cfg` into folder `out`; returns its metrics."""
    return run_folder(cfg, out, config_hash(cfg), _run, command)


def _run(cfg: RunConfig, out: Path, chash: str, info: DistInfo, command) -> dict:
    device = resolve_device(cfg, info)
    clock = accounting.DeviceClock(device, info.world_size)
    clock.seconds["startup"] = (time.perf_counter() - PROCESS_START) * info.world_size
    clock.start("startup")
    energy = accounting.EnergyMeter(device)
    ckpt_dir = Path(cfg.train.checkpoint_dir or out / "checkpoints")
    state = checkpoint.load_checkpoint(ckpt_dir, chash)

    seed_everything(cfg.seed)
    model, build_info = build_model(cfg, _num_classes(cfg))
    train_set, eval_set = build_data(cfg, model)
    model.to(device)
    if device.type == "cuda" and cfg.train.channels_last:
        model.to(memory_format=torch.channels_last)
    input_size = (cfg.data.channels, cfg.data.resolution, cfg.data.resolution)
    params = sum(p.numel() for p in model.parameters())
    from .. import convert

    added = sum(p.numel() for p in convert.quadratic_parameters(model) + convert.lora_parameters(model))
    flops = count_flops(model, input_size)
    stages = stages_of(cfg)
    progress = Progress()
    if state is not None:
        model.load_state_dict(state["model"])
        progress = restore(progress, state, clock, energy)
    if info.is_main:
        out.mkdir(parents=True, exist_ok=True)
        io.write_text(out / "config.yaml", to_yaml(cfg))
    log = Logger(out, progress, cfg.train.progress, info.is_main)
    amp = _amp_dtype(cfg, device)
    scaler = torch.amp.GradScaler(device.type, enabled=amp is torch.float16)
    criterion = nn.CrossEntropyLoss(label_smoothing=cfg.train.label_smoothing)

    def wrap() -> nn.Module:
        """DDP (built per stage: it reduces the gradients of the parameters trainable when built) and compile."""
        net = model
        if info.enabled:
            net = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
        return torch.compile(net) if cfg.train.compile else net
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    def snapshot() -> dict:
        progress.seconds = clock.snapshot()  # checkpoint writing itself is counted in the next snapshot
        progress.energy_joules = energy.update()
        return progress.__dict__.copy()

    def save(opt) -> None:
        if info.is_main:
            checkpoint.save_checkpoint(ckpt_dir, {
                "config_hash": chash, "model": model.state_dict(), "optimizer": opt.state_dict(),
                "scaler": scaler.state_dict(), "rng": _rng_state(), "progress": snapshot()})

    def run_eval(tag: str) -> dict:
        clock.start("initial_eval" if tag == "initial" else "eval")  # the first is not part of the cost
        result = evaluate(model, eval_set, cfg, device, info, amp)
        clock.stop()
        log.write({"event": "eval", "tag": tag, "step": progress.step, "epoch": progress.epoch,
                   "stage": progress.stage, **result, "device_s": clock.cost(),
                   "wall_s": time.perf_counter() - PROCESS_START})
        return result

    def measure_share() -> Optional[dict]:
        clock.start("probe")
        share = quadratic_share(model, share_batches(eval_set, cfg, device))
        clock.stop()
        return share

    clock.stop()
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
        net = wrap()
        lr = stage.lr or cfg.train.lr
        opt = make_optimizer(cfg, model, lr)
        total = stage.epochs * steps_per_epoch
        warmup = int(round(cfg.train.warmup_epochs * steps_per_epoch))
        if state is not None and state["progress"]["stage"] == s_idx:
            opt.load_state_dict(state["optimizer"])
            scaler.load_state_dict(state["scaler"])
        progress.stage = s_idx
        progress.trainable[s_idx:] = [trainable]
        for epoch in range(progress.epoch - epoch_base, stage.epochs):
            sampler.set_epoch(progress.epoch, start=progress.batch)
            log.open_bar(steps_per_epoch, progress.batch, f"stage {s_idx} epoch {progress.epoch}")
            clock.start("train")
            t_log, n_log, loss_sum = time.perf_counter(), 0, torch.zeros((), device=device)
            for x, y in iterate(train_set, sampler, cfg.data.num_workers, pin_memory=device.type == "cuda"):
                x, y = _to_device(x, y, device, cfg)
                stage_step = epoch * steps_per_epoch + progress.batch
                for g in opt.param_groups:
                    g["lr"] = warmup_cosine(stage_step, total, warmup, lr, cfg.train.min_lr)
                with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
                    loss = criterion(net(x), y)
                opt.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                if cfg.train.grad_clip:
                    scaler.unscale_(opt)
                    nn.utils.clip_grad_norm_(model.parameters(), cfg.train.grad_clip)
                scaler.step(opt)
                scaler.update()
                loss_sum += loss.detach().float()
                progress.batch += 1
                progress.step += 1
                progress.images += len(y) * info.world_size
                n_log += 1
                last = progress.batch == steps_per_epoch
                log.tick()
                log_now = progress.step % cfg.train.log_every == 0 or last
                save_now = progress.step % cfg.train.checkpoint_every == 0 and not last
                if log_now or save_now:
                    mean = (all_reduce_sum(loss_sum.clone(), info) / (n_log * info.world_size)).item()
                    if not math.isfinite(mean):
                        raise NonFiniteLossError(
                            f"loss became {mean} by step {progress.step} (stage {s_idx}, epoch {progress.epoch}); "
                            f"the run stopped and kept its last good checkpoint in {ckpt_dir}; try a lower "
                            f"train.lr (now {lr}) or train.grad_clip")
                if log_now:
                    accounting.synchronize(device)
                    dt = time.perf_counter() - t_log
                    log.write({"event": "step", "step": progress.step, "epoch": progress.epoch, "stage": s_idx,
                               "loss": mean, "lr": opt.param_groups[0]["lr"], "wall_s": time.perf_counter() - PROCESS_START,
                               "device_s": clock.cost(),
                               "images_per_s": n_log * len(y) * info.world_size / dt,
                               "peak_mem_mb": accounting.peak_memory_mb(device)})
                    t_log, n_log, loss_sum = time.perf_counter(), 0, torch.zeros((), device=device)
                if save_now:
                    save(opt)
            clock.stop()
            log.close_bar()
            progress.epoch += 1
            progress.batch = 0
            final_epoch = s_idx == len(stages) - 1 and epoch == stage.epochs - 1
            if progress.epoch % cfg.train.eval_every == 0 or final_epoch:
                progress.last_eval = run_eval("epoch")
                a1 = progress.last_eval["acc1"]
                progress.best_acc1 = a1 if progress.best_acc1 is None else max(progress.best_acc1, a1)
            log.write({"event": "epoch", "step": progress.step, "epoch": progress.epoch, "stage": s_idx,
                       "trainable_params": trainable, "device_s": clock.seconds["train"] + clock.seconds["eval"],
                       "wall_s": time.perf_counter() - PROCESS_START, "peak_mem_mb": accounting.peak_memory_mb(device)})
            if not final_epoch:
                save(opt)
        epoch_base += stage.epochs
        state = None

    share_end = measure_share()
    seconds = {k: round(v, 3) for k, v in clock.seconds.items()}
    seconds["total"] = round(sum(seconds.values()), 3)
    metrics = {
        "name": cfg.name or out.name, "method": cfg.method, "arch": cfg.model.arch, "dataset": cfg.data.dataset,
        "seed": cfg.seed, "config_hash": chash, "status": "complete",
        "acc1": progress.last_eval["acc1"], "acc5": progress.last_eval["acc5"], "best_acc1": progress.best_acc1,
        "initial_acc1": (progress.initial or {}).get("acc1"), "initial_acc5": (progress.initial or {}).get("acc5"),
        "epochs": progress.epoch, "steps": progress.step, "images_seen": progress.images,
        "train_images": len(train_set), "eval_images": progress.last_eval["eval_images"],
        "device_seconds": seconds, "device_hours": seconds["total"] / 3600, "num_devices": info.world_size, "device_type": device.type,
        "energy_joules": energy.update(), "energy_source": energy.source,
        "peak_mem_mb": accounting.peak_memory_mb(device),
        "params": params, "trainable_params": trainable, "trainable_params_stages": progress.trainable,
        "params_added": added, "flops": flops,
        "quadratic_share": {"start": progress.share_start, "end": share_end} if share_end else None,
        "input_size": list(input_size), "resumes": progress.resumes, **build_info,
        "provenance": accounting.provenance(cfg.to_dict(), chash, cfg.seed, info.world_size, device.type, command),
    }
    if info.is_main:
        from safetensors.torch import save_file

        with io.atomic_path(out / WEIGHTS) as tmp:
            save_file({k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}, str(tmp))
        io.write_json(out / "metrics.json", metrics)
        if not cfg.train.keep_checkpoint:
            (ckpt_dir / checkpoint.LAST).unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                ckpt_dir.rmdir()
    barrier(info)
    return metrics


def _num_classes(cfg: RunConfig) -> int:
    if cfg.model.num_classes is not None:
        return cfg.model.num_classes
    if cfg.data.dataset == "fashion_mnist":
        return len(cfg.data.classes) if cfg.data.classes else 10
    return 1000 if cfg.data.dataset == "imagenet1k" else _folder_classes(cfg)


def _folder_classes(cfg: RunConfig) -> int:
    from ..data import imagenet21k

    return imagenet21k(cfg.data.root, "train", transform=lambda x: x).num_classes
