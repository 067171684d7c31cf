"""Top-1 / top-5 evaluation: `evaluate` (the loop, over all ranks) and `evaluate_run` (a finished run's weights,
on its own eval data or on other data through `data.*` overrides)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..data import ShardedBatchSampler, iterate
from ..run import WEIGHTS, DistInfo, check_eval_overrides, evaluate_model
from ..run.distributed import all_reduce_sum
from .config import RunConfig, load_config
from .data import build_datasets, num_classes, to_device
from .model import build_structure

__all__ = ["evaluate", "evaluate_run"]


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
        x, y = to_device(x, y, device, cfg.train.channels_last)
        with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
            logits = model(x)
        logits = logits.float()
        k = min(5, logits.shape[1])
        top = logits.topk(k, dim=1).indices
        hit = top == y[:, None]
        count = torch.tensor(float(len(y)), device=device, dtype=torch.float64)
        totals += torch.stack([F.cross_entropy(logits, y, reduction="sum").double(), hit[:, 0].sum().double(),
                               hit.any(1).sum().double(), count])
    all_reduce_sum(totals, info)
    model.train(was)
    loss, top1, top5, n = totals.tolist()
    return {"acc1": 100 * top1 / n, "acc5": 100 * top5 / n, "eval_loss": loss / n, "eval_images": int(n)}


def evaluate_run(run, overrides: tuple = (), out: Optional[str] = None) -> dict:
    """Top-1/top-5 of the model in run folder `run` (its config.yaml and model.safetensors)."""
    from safetensors.torch import load_file

    run = Path(run)
    for name in ("config.yaml", WEIGHTS):
        if not (run / name).is_file():
            raise FileNotFoundError(f"{run / name} not found; expected the --out folder of a finished quadranet "
                                    f"train run")
    check_eval_overrides(overrides)
    cfg = load_config(run / "config.yaml", overrides)
    model = build_structure(cfg, num_classes(cfg))
    model.load_state_dict(load_file(str(run / WEIGHTS)))
    _, eval_set = build_datasets(cfg, model)
    return evaluate_model(cfg, model, lambda m, device, info, amp: evaluate(m, eval_set, cfg, device, info, amp),
                          None, out, run=str(run), overrides=list(overrides))
