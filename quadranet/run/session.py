"""The shared state of one run, handed by `run_folder` to the task's training loop, in the manner of
torchvision's references.

The session holds the device and autocast, the clocks and energy meter, the checkpoint (restore, save), the
progress record, the log, seeding and RNG states, and the finish step: the weights file, then `metrics.json`
(written last and atomically: its presence means the run completed), then the checkpoint dropped. A rerun of the
same command resumes from the last checkpoint and replays the same batches (the data order depends only on seed
and epoch), so an interrupted run ends with the metrics of an uninterrupted one; work after that checkpoint is
lost and not counted.

Every task restores in the same order: `resume` (model weights, RNG states, progress, clocks and energy), then,
once the loop has built the optimizer of the current stage, `restore_optimizer` (optimizer and grad scaler).
"""
from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Optional

import torch
from torch import nn

from .. import atomic
from . import accounting, checkpoint
from .device import amp_dtype, resolve_device
from .distributed import DistInfo, all_reduce_sum, barrier
from .logger import Logger
from .rng import rng_state, seed_everything, set_rng_state

METRICS = "metrics.json"  # written last: a run folder holding it is complete
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
    data_wait_s: float = 0.0  # device-seconds the training steps waited for their batch (inside `train`)
    resumes: int = 0
    trainable: list = field(default_factory=list)  # trainable parameters of each stage begun
    log: list = field(default_factory=list)  # every log line so far (log.jsonl is rewritten from it on resume)


def wall() -> float:
    """Wall seconds since the process started."""
    return time.perf_counter() - PROCESS_START


class Window:
    """Loss (and named loss parts) and images summed over the steps since the last log line."""

    def __init__(self, device: torch.device, dtype: torch.dtype, info: DistInfo):
        self.device, self.dtype, self.info = device, dtype, info
        self.reset()

    def reset(self) -> None:
        self.t0, self.steps, self.images = time.perf_counter(), 0, 0
        self.loss, self.parts = torch.zeros((), device=self.device, dtype=self.dtype), {}

    def add(self, loss: torch.Tensor, images: int, parts: Optional[dict] = None) -> None:
        self.loss += loss.detach().to(self.dtype)
        for k, v in (parts or {}).items():
            self.parts[k] = self.parts.get(k, 0.0) + v.detach().to(self.dtype)
        self.steps += 1
        self.images += images * self.info.world_size

    def mean(self, total: Optional[torch.Tensor] = None) -> float:
        """Mean loss per step over all ranks (of `total`, a sum like `self.loss`)."""
        total = self.loss if total is None else total
        return (all_reduce_sum(total.clone(), self.info) / (self.steps * self.info.world_size)).item()

    def parts_mean(self) -> dict:
        return {k: self.mean(v) for k, v in sorted(self.parts.items())}


class Session:
    """The shared state of one run: device, autocast and grad scaler, clocks, energy, checkpoint, progress, log.

    The task's loop builds its model and data, calls `resume`, builds its optimizer and calls `restore_optimizer`,
    and then drives `begin_epoch`, `optimizer_step`, `step_done`, `log_step`, `save`, `evaluate`, `end_epoch` and
    finally `finish`."""

    def __init__(self, cfg, out: Path, chash: str, info: DistInfo, command: Optional[list] = None):
        self.cfg, self.out, self.chash, self.info, self.command = cfg, out, chash, info, command
        self.device = resolve_device(cfg.train.device, info.local_rank, key="train.device")
        self.clock = accounting.DeviceClock(self.device, info.world_size)
        self.clock.seconds["startup"] = wall() * info.world_size
        self.clock.start("startup")  # ends when the first evaluation, probe or training phase starts
        self.energy = accounting.EnergyMeter(self.device, out)
        self.ckpt_dir = Path(cfg.train.checkpoint_dir or out / "checkpoints")
        self.state = checkpoint.load_checkpoint(self.ckpt_dir, chash)
        self.amp = amp_dtype(cfg.train.amp, self.device)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp is torch.float16)
        self.progress = Progress()
        self.log: Optional[Logger] = None
        self.advice = "try a lower train.lr or train.grad_clip"  # for a loss that is not finite
        seed_everything(cfg.seed)

    def resume(self, model: nn.Module, config_yaml: str) -> Progress:
        """Continue from the checkpoint, if any (model weights, progress, clocks, energy, RNG states: work done
        after it by a killed attempt is lost and not counted); write config.yaml and open the log."""
        if self.state is not None:
            model.load_state_dict(self.state["model"])
            set_rng_state(self.state["rng"])
            self.progress = Progress(**self.state["progress"])
            self.progress.resumes += 1
            # the checkpoint holds the energy of all ranks: rank 0 carries it on (see energy_joules)
            self.energy.carry_on(self.progress.energy_joules if self.info.is_main else 0.0)
            self.clock.seconds.update({k: v for k, v in self.progress.seconds.items() if k != "startup"})
            self.clock.seconds["startup"] += self.progress.seconds.get("startup", 0.0)
        if self.info.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            atomic.write_text(self.out / "config.yaml", config_yaml)
        self.log = Logger(self.out, self.progress, self.cfg.train.progress, self.info.is_main)
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        return self.progress

    def restore_optimizer(self, optimizer: torch.optim.Optimizer, stage: int = 0) -> None:
        """Optimizer and grad-scaler states of the checkpoint, if it was written in stage `stage` (after `resume`:
        the progress it restores says which stage the loop is in)."""
        if self.state is not None and self.state["progress"].get("stage", 0) == stage:
            optimizer.load_state_dict(self.state["optimizer"])
            self.scaler.load_state_dict(self.state["scaler"])

    def wrap(self, model: nn.Module) -> nn.Module:
        """DDP under torchrun (it reduces the gradients of the parameters trainable when it is built)."""
        if not self.info.enabled:
            return model
        return nn.parallel.DistributedDataParallel(
            model, device_ids=[self.device.index] if self.device.type == "cuda" else None)

    def autocast(self):
        return torch.autocast(self.device.type, dtype=self.amp, enabled=self.amp is not None)

    def begin_epoch(self, sampler, steps_per_epoch: int, desc: str, dtype: torch.dtype = torch.float32) -> Window:
        """Position `sampler` at this epoch's next batch, start the training clock; returns a fresh log window."""
        sampler.set_epoch(self.progress.epoch, start=self.progress.batch)
        self.log.open_bar(steps_per_epoch, self.progress.batch, desc)
        self.clock.start("train")
        return Window(self.device, dtype, self.info)

    def batches(self, loader: Iterable) -> Iterable:
        """`loader`'s batches, timing how long each took to arrive: the data wait (device-seconds, this rank's
        times the devices), shown beside a run's cost so a reader sees when it measures the input pipeline."""
        it = iter(loader)
        while True:
            t0 = time.perf_counter()
            try:
                batch = next(it)
            except StopIteration:
                return
            self.progress.data_wait_s += (time.perf_counter() - t0) * self.info.world_size
            yield batch

    def seconds(self) -> dict:
        """Cumulative training device-seconds (`train_s`, evaluation apart) and data wait, for a log line."""
        return {"train_s": self.clock.snapshot()["train"], "data_wait_s": self.progress.data_wait_s}

    def optimizer_step(self, loss: torch.Tensor, optimizer: torch.optim.Optimizer, clip: Iterable) -> None:
        """Scaled backward, gradient clipping of `clip` (train.grad_clip), optimizer and scaler step."""
        optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.cfg.train.grad_clip:
            self.scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_(clip, self.cfg.train.grad_clip)
        self.scaler.step(optimizer)
        self.scaler.update()

    def step_done(self, window: Window, loss: torch.Tensor, images: int, steps_per_epoch: int,
                  parts: Optional[dict] = None) -> tuple[bool, bool, Optional[float]]:
        """Count the step of `images` images (this rank's) and its loss; returns (log now, save now, mean loss of
        the window when either is due). Raises NonFiniteLossError, keeping the last good checkpoint, when that
        loss is not finite."""
        p, t = self.progress, self.cfg.train
        window.add(loss, images, parts)
        p.batch += 1
        p.step += 1
        p.images += images * self.info.world_size
        last = p.batch == steps_per_epoch
        self.log.tick()
        log_now = p.step % t.log_every == 0 or last
        save_now = p.step % t.checkpoint_every == 0 and not last
        mean = None
        if log_now or save_now:
            mean = window.mean()
            if not math.isfinite(mean):
                raise NonFiniteLossError(
                    f"loss became {mean} by step {p.step} (stage {p.stage}, epoch {p.epoch}); the run stopped and "
                    f"kept its last good checkpoint in {self.ckpt_dir}; {self.advice}")
        return log_now, save_now, mean

    def log_step(self, window: Window, record: dict) -> None:
        """A 'step' line: `record`, then wall and device seconds, throughput and peak memory; resets `window`."""
        accounting.synchronize(self.device)
        dt = time.perf_counter() - window.t0
        self.log.write({"event": "step", **record, "wall_s": wall(), "device_s": self.clock.cost(), **self.seconds(),
                        "images_per_s": window.images / dt, "peak_mem_mb": accounting.peak_memory_mb(self.device)})
        window.reset()

    def end_epoch(self) -> None:
        self.clock.stop()
        self.log.close_bar()
        self.progress.epoch += 1
        self.progress.batch = 0

    def log_epoch(self, record: dict) -> None:
        seconds = self.clock.seconds
        self.log.write({"event": "epoch", **record, "device_s": seconds["train"] + seconds["eval"], **self.seconds(),
                        "wall_s": wall(), "peak_mem_mb": accounting.peak_memory_mb(self.device)})

    def evaluate(self, tag: str, fn: Callable[[], dict], record: dict) -> dict:
        """`fn()` timed as evaluation ('initial': the one before training, apart from the cost) and logged."""
        self.clock.start("initial_eval" if tag == "initial" else "eval")
        result = fn()
        self.clock.stop()
        self.log.write({"event": "eval", "tag": tag, **record, **result, "device_s": self.clock.cost(),
                        **self.seconds(), "wall_s": wall()})
        return result

    def probe(self, fn: Callable[[], Optional[dict]]) -> Optional[dict]:
        """`fn()` timed as a measurement apart from the cost (e.g. the quadratic share)."""
        self.clock.start("probe")
        result = fn()
        self.clock.stop()
        return result

    def save(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        """Checkpoint (rank 0; every rank calls it): weights, optimizer, scaler, RNG states and progress, written
        atomically."""
        joules = self.energy_joules()
        if self.info.is_main:
            self.progress.seconds = self.clock.snapshot()  # checkpoint writing itself counts in the next snapshot
            self.progress.energy_joules = joules
            checkpoint.save_checkpoint(self.ckpt_dir, {
                "config_hash": self.chash, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scaler": self.scaler.state_dict(), "rng": rng_state(), "progress": self.progress.__dict__.copy()})

    def energy_joules(self) -> Optional[float]:
        """Energy of the run so far over all ranks, as device-seconds count all devices (under torchrun a collective:
        every rank calls it); None when any rank has no measure."""
        own = self.energy.update()
        if not self.info.enabled:
            return own
        total = torch.tensor([math.nan if own is None else own], dtype=torch.float64, device=self.device)
        total = all_reduce_sum(total, self.info).item()
        return None if math.isnan(total) else total

    def cost_fields(self) -> dict:
        """metrics.json's accounting: device-seconds per phase and total, devices, energy, peak memory (every rank
        calls it)."""
        seconds = {k: round(v, 3) for k, v in self.clock.seconds.items()}
        seconds["total"] = round(sum(seconds.values()), 3)
        joules = self.energy_joules()
        intensity = self.cfg.train.carbon_intensity or accounting.DEFAULT_CARBON_INTENSITY
        return {"device_seconds": seconds, "device_hours": seconds["total"] / 3600,
                "num_devices": self.info.world_size, "device_type": self.device.type,
                "energy_joules": joules, "energy_kwh": None if joules is None else joules / 3.6e6,
                "co2e_kg": accounting.carbon_kg(joules, intensity), "energy_source": self.energy.source,
                "carbon_intensity_g_per_kwh": intensity,
                "energy_tracking_s": round(self.energy.seconds, 3),  # its overhead, inside the seconds above
                "data_wait_s": round(self.progress.data_wait_s, 3),  # inside device_seconds.train
                "peak_mem_mb": accounting.peak_memory_mb(self.device)}

    def provenance(self) -> dict:
        return accounting.provenance(self.cfg.to_dict(), self.chash, self.cfg.seed, self.info.world_size,
                                     self.device.type, self.command)

    def finish(self, model: nn.Module, metrics: dict) -> dict:
        """Write the weights, then metrics.json (last, atomically), then drop the checkpoint unless
        train.keep_checkpoint; returns `metrics`."""
        if self.info.is_main:
            checkpoint.save_weights(model, self.out / checkpoint.WEIGHTS)
            atomic.write_json(self.out / METRICS, metrics)
            if not self.cfg.train.keep_checkpoint:
                (self.ckpt_dir / checkpoint.LAST).unlink(missing_ok=True)
                with contextlib.suppress(OSError):
                    self.ckpt_dir.rmdir()
        self.energy.close()
        barrier(self.info)
        return metrics
