"""A toy training loop that drives the run layer as every task's loop drives it (`run_toy`)."""
from dataclasses import dataclass, field
from typing import Optional

import pytest
import torch
from torch import nn

from quadranet.config import TaskConfig
from quadranet.data import ShardedBatchSampler
from quadranet.run import Session, run_folder

@dataclass
class ToyTrain:
    epochs: int = 2
    lr: float = 0.05
    nan_from_step: Optional[int] = None  # the loss becomes NaN from this step on
    device: str = "cpu"
    amp: str = "none"
    grad_clip: Optional[float] = None
    log_every: int = 1
    checkpoint_every: int = 3
    checkpoint_dir: Optional[str] = None
    progress: str = "none"
    keep_checkpoint: bool = False
    carbon_intensity: Optional[float] = None


@dataclass
class ToyConfig(TaskConfig):
    train: ToyTrain = field(default_factory=ToyTrain)


def toy_loop(run: Session) -> dict:
    """Linear regression with SGD + momentum (optimizer state to restore) and a random term in the loss (RNG
    state to restore), checkpointed mid-epoch and at each epoch end."""
    cfg, t = run.cfg, run.cfg.train
    data = torch.Generator().manual_seed(0)  # 40 items in batches of 8: 5 steps per epoch
    x = torch.randn(40, 4, generator=data)
    y = x.sum(1, keepdim=True)
    model = nn.Linear(4, 1)
    progress = run.resume(model, "toy: true\n")
    opt = torch.optim.SGD(model.parameters(), lr=t.lr, momentum=0.9)
    run.restore_optimizer(opt)
    sampler = ShardedBatchSampler(len(x), 8, shuffle=True, seed=cfg.seed, drop_last=True)
    while progress.epoch < t.epochs:
        window = run.begin_epoch(sampler, len(sampler), f"epoch {progress.epoch}")
        for idx in run.batches(iter(sampler)):
            loss = ((model(x[idx]) - y[idx]) ** 2).mean() + 0.01 * torch.rand(())
            if t.nan_from_step is not None and progress.step + 1 >= t.nan_from_step:
                loss = loss * float("nan")
            run.optimizer_step(loss, opt, model.parameters())
            log_now, save_now, mean = run.step_done(window, loss, len(idx), len(sampler))
            if log_now:
                run.log_step(window, {"step": progress.step, "loss": mean})
            if save_now:
                run.save(model, opt)
        run.end_epoch()
        with torch.no_grad():
            progress.last_eval = run.evaluate("epoch", lambda: {"mse": ((model(x) - y) ** 2).mean().item()},
                                              {"step": progress.step})
        run.log_epoch({"step": progress.step})
        if progress.epoch < t.epochs:
            run.save(model, opt)
    return run.finish(model, {"config_hash": run.chash, "mse": progress.last_eval["mse"], "steps": progress.step,
                              "images_seen": progress.images, "resumes": progress.resumes, **run.cost_fields()})


def toy_hash(cfg: ToyConfig) -> str:
    return f"toy-lr{cfg.train.lr}" + ("" if cfg.train.nan_from_step is None else f"-nan{cfg.train.nan_from_step}")


@pytest.fixture(name="run_toy", scope="session")
def run_toy_fixture():
    """`run_toy(out, **train)`: the metrics of the toy run with train section `ToyTrain(**train)` in folder `out`."""
    def run_toy(out, **train) -> dict:
        cfg = ToyConfig(train=ToyTrain(**train))
        return run_folder(cfg, out, toy_hash(cfg), toy_loop)

    return run_toy
