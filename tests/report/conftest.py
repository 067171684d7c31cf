"""Synthetic results folders in the layout the workflow writes (manifest.tsv, runs/<id>/...), with known numbers."""
import json
from types import SimpleNamespace

import pandas as pd
import pytest
import yaml

# eval curves: (device_s, acc1) per method; adaptation reaches scratch's best (85) at 4 s, scratch at 40 s
CURVES = {
    "scratch": [(0, 20.0), (10, 50.0), (20, 70.0), (30, 80.0), (40, 85.0)],
    "adapt": [(0, 20.0), (2, 80.0), (4, 88.0)],
    "finetune": [(0, 20.0), (2, 82.0), (4, 86.0)],
    "fo_scratch": [(0, 20.0), (20, 70.0), (40, 84.0)],
    "lora": [(0, 20.0), (2, 70.0), (4, 75.0)],
}
PRETRAIN_S = 30.0


def write_run(root, run, method, seed=0, curve=None, cfg=None, initial=None, extra=None, stages=1):
    """A finished run folder: metrics.json, config.yaml, log.jsonl (eval lines from `curve`, step lines between)."""
    d = root / "runs" / run
    d.mkdir(parents=True)
    curve = [(t, a + seed * 0.5) for t, a in (curve or CURVES[method])]
    lines = []
    for i, (t, acc) in enumerate(curve):
        stage = min(stages - 1, i * stages // len(curve))
        if i:
            lines.append({"event": "step", "step": i * 10, "epoch": i, "stage": stage, "loss": 2.0 / (i + 1),
                          "lr": 1e-3, "wall_s": t + 1, "device_s": t - 0.5, "images_per_s": 100.0, "peak_mem_mb": 0})
        lines.append({"event": "eval", "tag": "initial" if i == 0 else "epoch", "step": i * 10, "epoch": i,
                      "stage": stage, "acc1": acc, "acc5": 99.0, "eval_loss": 1.0 / (i + 1), "device_s": t,
                      "wall_s": t + 1})
    (d / "log.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    config = {"method": method if method != "fo_scratch" else "scratch", "seed": seed,
              "model": {"arch": "convnext_atto", "pretrained": "none", "quadratic": method == "scratch"},
              "adapter": {"rank": 4, "dilation": 2, "kernel": "bilinear", "targets": ["auto"]},
              "data": {"dataset": "fashion_mnist", "shift": None, "shift_strength": 0.0},
              "train": {"stages": [{"epochs": 1, "trainable": ["all"]}] * stages}}
    for section, values in (cfg or {}).items():
        config.setdefault(section, {}).update(values) if isinstance(values, dict) else config.update({section: values})
    (d / "config.yaml").write_text(yaml.safe_dump(config))
    last = curve[-1]
    metrics = {"name": run, "method": config["method"], "arch": "convnext_atto", "dataset": "fashion_mnist",
               "seed": seed, "config_hash": "abc", "acc1": last[1], "acc5": 99.0,
               "best_acc1": max(a for _, a in curve), "initial_acc1": curve[0][1] if initial is None else initial,
               "initial_acc5": 50.0, "epochs": len(curve) - 1, "steps": 10 * (len(curve) - 1), "images_seen": 1000,
               "train_images": 500, "eval_images": 500,
               "device_seconds": {"train": last[0] * 0.8, "eval": last[0] * 0.2, "startup": 3.0, "total": last[0] + 3},
               "device_hours": (last[0] + 3) / 3600, "num_devices": 1, "device_type": "cpu", "energy_joules": None,
               "params": 3_500_000, "trainable_params": 100_000, "params_added": 140_000, "flops": 1e7,
               "provenance": {"git_commit": "0123456789abcdef", "git_dirty": False, "command": "quadranet train",
                              "config_hash": "abc", "seed": seed, "date": "2026-01-01",
                              "versions": {"torch": "2.14.1"},
                              "hardware": {"cpu_model": "Test CPU", "cpu_count": 2, "gpu_name": None, "gpu_count": 0}},
               **(extra or {})}
    (d / "metrics.json").write_text(json.dumps(metrics))
    return d


def make_results(root, seeds=(0, 1), missing=()):
    """E1-E4 and a pretraining run, plus a bench CSV; returns the manifest DataFrame."""
    rows = []
    pre = "pretrain/convnext_atto/first_order/src100/seed0"
    write_run(root, pre, "scratch", curve=[(0, 20.0), (15, 60.0), (PRETRAIN_S, 90.0)], extra={"train_images": 500})
    rows.append(("pretrain", "convnext_atto", "first_order", "src100", 0, pre))
    src = {"model": {"pretrained": f"results/runs/{pre}"}}
    for method in CURVES:
        for seed in seeds:
            run = f"e1/convnext_atto/{method}/base/seed{seed}"
            rows.append(("e1", "convnext_atto", method, "base", seed, run))
            if run not in missing:
                write_run(root, run, method, seed, cfg=src if method in ("adapt", "finetune", "lora") else None)
    for seed in seeds:  # E2 reuses E1's runs for its default source size and scratch reference
        rows.append(("e2", "convnext_atto", "adapt", "src100", seed, f"e1/convnext_atto/adapt/base/seed{seed}"))
        rows.append(("e2", "convnext_atto", "scratch", "none", seed, f"e1/convnext_atto/scratch/base/seed{seed}"))
    for shift, advantage in (("contrast", 0.0), ("gamma", 6.0)):  # quadratic beats LoRA on the nonlinear shift
        for method in ("adapt", "lora", "finetune"):
            run = f"e3/convnext_atto/{method}/{shift}-1.0/seed0"
            acc = 70.0 + (advantage if method == "adapt" else 0.0)
            write_run(root, run, method, curve=[(0, 40.0), (2, acc)], initial=40.0,
                      cfg={"data": {"shift": shift, "shift_strength": 1.0}, **src})
            rows.append(("e3", "convnext_atto", method, f"{shift}-1.0", 0, run))
    for variant, cfg, stages in (("base", {}, 1), ("rank1", {"adapter": {"rank": 1}}, 1), ("two_stage", {}, 2)):
        run = f"e4/convnext_atto/adapt/{variant}/seed0" if variant != "base" else "e1/convnext_atto/adapt/base/seed0"
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
    return SimpleNamespace(make_results=make_results, write_run=write_run, PRETRAIN_S=PRETRAIN_S)


@pytest.fixture
def results(tmp_path):
    root = tmp_path / "results"
    make_results(root)
    return root
