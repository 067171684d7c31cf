"""Synthetic results folders in the layout the workflow writes (manifest.tsv, runs/<id>/...), with known numbers.

E1 has two settings (intask: adapted methods start from the fo_scratch run of the same seed and already meet
the target; transfer: they start from a pretrain run with a new head, at chance), 3 seeds, and every method.
Each seed adds 0.5 pp to a run's accuracies (times stay), so per seed:
- scratch ends at 85.0 + 0.5 k -> target T = 85.5 - 1 = 84.5, reached at 40 device-s (38 of them training: each
  evaluation takes 0.5 s); its last quarter gains 0.1 pp.
- adapt reaches T at 3 device-s, 2.5 of training (first evaluation after training); fo_scratch at 60 (58.5).
"""
import json
from types import SimpleNamespace

import pandas as pd
import pytest
import yaml

SEEDS = (0, 1, 2)
CHANCE, INTASK_START = 10.0, 86.0
# evaluations after training started: (device_s, acc1) per method; the evaluation at step 0 comes first
CURVES = {
    "scratch": [(10, 50.0), (20, 70.0), (30, 80.0), (40, 84.6), (50, 84.8), (60, 84.9), (70, 85.0), (80, 85.0)],
    "v1_scratch": [(20, 60.0), (40, 75.0), (60, 79.0), (80, 80.0)],
    "fo_scratch": [(20, 70.0), (40, 80.0), (60, 84.6), (80, 85.0)],
    "adapt": [(3, 86.0), (6, 88.0)],
    "finetune": [(3, 85.0), (6, 86.0)],
    "lora": [(3, 75.0), (6, 80.0)],
    "head": [(3, 60.0), (6, 62.0)],
}
FROM_PRETRAINED = ("adapt", "finetune", "lora", "head")
PRETRAIN_S = 30.0
SHARE = {"start": {"median": 0.0, "max": 0.0, "layers": 12}, "end": {"median": 0.05, "max": 0.2, "layers": 12}}
# E3: zero-shot top-1 per (shift, strength) against the band [30, 65]; adapt - lora per shift (+ 0.3 pp per seed
# on nonlinear shifts); out-of-band points carry large advantages that would flip the verdict if kept
E3_ZERO_SHOT = {("contrast", 0.5): 70.0, ("contrast", 1.0): 50.0, ("brightness", 0.5): 60.0,
                ("brightness", 1.0): 20.0, ("gamma", 0.5): 55.0, ("gamma", 1.0): 40.0, ("solarize", 1.0): 10.0}
E3_ADVANTAGE = {("contrast", 1.0): 1.0, ("brightness", 0.5): 1.0, ("brightness", 1.0): -10.0, ("gamma", 1.0): 6.0,
                ("solarize", 1.0): -20.0}


def write_run(root, run, method, seed=0, curve=None, cfg=None, start=CHANCE, extra=None, stages=1, old_layout=False):
    """A finished run folder: metrics.json, config.yaml, log.jsonl (an evaluation at step 0 at accuracy `start`,
    then one per point of `curve` every 10 steps, a step line before each). old_layout: the initial evaluation
    takes 1 device-second that log lines and `device_seconds.eval` count (runs before initial_eval existed)."""
    d = root / "runs" / run
    d.mkdir(parents=True)
    shift = 1.0 if old_layout else 0.0
    curve = [(0.0, start)] + list(curve or CURVES[method])
    curve = [(t + shift, a + seed * 0.5) for t, a in curve]
    lines = []
    for i, (t, acc) in enumerate(curve):
        stage = min(stages - 1, i * stages // len(curve))
        # each evaluation after training started takes 0.5 device-s: training seconds = device_s - 0.5 i (logged
        # as train_s by new runs; old ones leave it to the report to work out from the step line before)
        timing = {} if old_layout else {"train_s": max(0.0, t - 0.5 * i)}
        if i:
            lines.append({"event": "step", "step": i * 10, "epoch": i, "stage": stage, "loss": 2.0 / (i + 1),
                          "lr": 1e-3, "wall_s": t + 1, "device_s": t - 0.5, "images_per_s": 100.0, "peak_mem_mb": 0,
                          **timing})
        lines.append({"event": "eval", "tag": "initial" if i == 0 else "epoch", "step": i * 10, "epoch": i,
                      "stage": stage, "acc1": acc, "acc5": 99.0, "eval_loss": 1.0 / (i + 1), "eval_images": 500,
                      "device_s": t, "wall_s": t + 1, **timing})
    (d / "log.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    config = {"method": method if method != "fo_scratch" else "scratch", "seed": seed,
              "model": {"arch": "convnext_atto", "pretrained": "none", "quadratic": method == "scratch"},
              "adapter": {"rank": 4, "dilation": 2, "kernel": "bilinear", "targets": ["auto"]},
              "data": {"dataset": "fashion_mnist", "shift": None, "shift_strength": 0.0},
              "train": {"stages": [{"epochs": 1, "trainable": ["all"]}] * stages}}
    for section, values in (cfg or {}).items():
        config.setdefault(section, {}).update(values) if isinstance(values, dict) else config.update({section: values})
    (d / "config.yaml").write_text(yaml.safe_dump(config))
    last = curve[-1][0]
    secs = {"train": (last - shift) * 0.8, "eval": (last - shift) * 0.2 + shift, "startup": 3.0, "total": last + 3}
    if not old_layout:
        secs["initial_eval"] = 0.5
    metrics = {"name": run, "method": config["method"], "arch": "convnext_atto", "dataset": "fashion_mnist",
               "seed": seed, "config_hash": "abc", "acc1": curve[-1][1], "acc5": 99.0,
               "best_acc1": max(a for _, a in curve), "initial_acc1": curve[0][1],
               "initial_acc5": 50.0, "epochs": len(curve) - 1, "steps": 10 * (len(curve) - 1), "images_seen": 1000,
               "train_images": 500, "eval_images": 500, "device_seconds": secs,
               "device_hours": (last + 3) / 3600, "num_devices": 1, "device_type": "cpu", "energy_joules": None,
               "params": 3_500_000, "trainable_params": 100_000, "params_added": 140_000, "flops": 1e7,
               "quadratic_share": SHARE if method in ("adapt", "lora") else None,
               "provenance": {"git_commit": "0123456789abcdef", "git_dirty": False, "command": "quadranet train",
                              "config_hash": "abc", "seed": seed, "date": "2026-01-01",
                              "versions": {"torch": "2.14.1"},
                              "hardware": {"cpu_model": "Test CPU", "cpu_count": 2, "gpu_name": None, "gpu_count": 0}},
               **(extra or {})}
    (d / "metrics.json").write_text(json.dumps(metrics))
    return d


def e1_run(method, setting, seed, backbone="convnext_atto"):
    return f"e1/{backbone}/{method}/{setting}/seed{seed}"


def make_results(root, seeds=SEEDS, missing=(), methods=tuple(CURVES)):
    """E1 (both settings), E2-E4 and a pretraining run, plus a bench CSV; returns the manifest DataFrame."""
    rows = []
    pre = "pretrain/convnext_atto/first_order/src100/seed0"
    write_run(root, pre, "fo_scratch", curve=[(15, 60.0), (PRETRAIN_S, 90.0)], extra={"train_images": 500})
    rows.append(("pretrain", "convnext_atto", "first_order", "src100", 0, pre))
    for setting in ("intask", "transfer"):
        for method in methods:
            for seed in seeds:
                run = e1_run(method, setting, seed)
                rows.append(("e1", "convnext_atto", method, setting, seed, run))
                if run in missing:
                    continue
                source = pre if setting == "transfer" else e1_run("fo_scratch", "intask", seed)
                pretrained = method in FROM_PRETRAINED
                write_run(root, run, method, seed, cfg={"model": {"pretrained": f"results/runs/{source}"}}
                          if pretrained else None, start=INTASK_START if pretrained and setting == "intask" else CHANCE)
    for seed in seeds:  # E2 reuses E1's transfer runs for its default source size and scratch reference
        rows.append(("e2", "convnext_atto", "adapt", "src100", seed, e1_run("adapt", "transfer", seed)))
        rows.append(("e2", "convnext_atto", "scratch", "none", seed, e1_run("scratch", "transfer", seed)))
    src = {"model": {"pretrained": f"results/runs/{pre}"}}
    for (shift, strength), zero_shot in E3_ZERO_SHOT.items():
        for method in ("adapt", "lora", "finetune", "head"):
            for seed in seeds:
                run = f"e3/convnext_atto/{method}/{shift}-{strength}/seed{seed}"
                adv = E3_ADVANTAGE.get((shift, strength), 0.0) + (0.3 * seed if shift == "gamma" else 0.0)
                acc = {"adapt": 70.0 + adv, "lora": 70.0, "finetune": 72.0, "head": 62.0}[method] - 0.5 * seed
                write_run(root, run, method, seed, curve=[(2, acc)], start=zero_shot - 0.5 * seed,
                          cfg={"data": {"shift": shift, "shift_strength": strength}, **src})
                rows.append(("e3", "convnext_atto", method, f"{shift}-{strength}", seed, run))
    for variant, cfg, stages in (("base", {}, 1), ("rank1", {"adapter": {"rank": 1}}, 1), ("two_stage", {}, 2)):
        run = f"e4/convnext_atto/adapt/{variant}/seed0" if variant != "base" else e1_run("adapt", "transfer", 0)
        if variant != "base":
            write_run(root, run, "adapt", cfg={**cfg, **src}, stages=stages)
        rows.append(("e4", "convnext_atto", "adapt", variant, 0, run))
    manifest = pd.DataFrame(rows, columns=["exp", "backbone", "method", "variant", "seed", "run"])
    manifest.to_csv(root / "manifest.tsv", sep="\t", index=False)
    bench = root / "bench"
    bench.mkdir()
    pd.DataFrame({"model": "convnext_atto", "variant": ["first_order", "adapted", "adapted_memeff", "v1"],
                  "mode": "train", "batch": 8, "input_size": 32, "device": "cpu", "images_per_s": [100.0, 80, 70, 60],
                  "step_ms": [80.0, 100, 114, 133], "peak_mem_mb": 0.0, "saved_for_backward_mb": [10.0, 14, 11, 16],
                  "params": 3.5e6, "trainable_params": 3.5e6, "ratio_vs_first_order": [1.0, 0.8, 0.7, 0.6]}
                 ).to_csv(bench / "convnext_atto.csv", index=False)
    return manifest


@pytest.fixture
def synthetic():
    """The writers above, for tests that build their own variants."""
    return SimpleNamespace(make_results=make_results, write_run=write_run, e1_run=e1_run, PRETRAIN_S=PRETRAIN_S,
                           CURVES=CURVES, SEEDS=SEEDS)


@pytest.fixture(scope="session")
def results(tmp_path_factory):
    """One synthetic results folder for the session (tests only read it)."""
    root = tmp_path_factory.mktemp("shared") / "results"
    make_results(root)
    return root
