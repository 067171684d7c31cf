"""`quadranet plan`: the device-hours a workflow config will cost, per run, per experiment and in all, before
anything runs.

The runs are the workflow's own registry (`quadranet.experiments.build_registry` of the config and its backbone
sheet, with the data and weights checks off, so a paper-scale config can be planned before its data is on disk).
Each run's work is images x epochs from its resolved config (`quadranet.classify.config`): training images per epoch
(the `train_per_class` subset, or the whole training set) times each stage's epochs, and the evaluation images of
each evaluation (every `train.eval_every` epochs, at the chosen `train.eval_steps` and at the end; the evaluation before
training and start-up are not a run's cost, as in metrics.json). Its throughput is images/s of `quadranet bench`
on one device for the run's architecture, variant and mode:

    training stage            bench variant (train)     evaluation (infer)
    first-order, all layers   first_order               first_order
    quadratic from scratch    adapted                   adapted
    QuadraNet V1 from scratch v1                        v1
    adapt, primary frozen     adapted_frozen            adapted
    adapt, all layers         adapted (adapted_memeff with adapter.memory_efficient)
    LoRA                      lora                      lora
    head only                 first_order, infer (a forward pass; the head's backward is negligible)

An adapter with the rbf or rbf_in kernel costs its bilinear variant's time times the bench's adapted_<kernel> /
adapted (the bench has the kernels as the all-trainable adapter only).

Throughput comes from bench CSVs the user names (`--bench`, e.g. one measured on their GPU) or from a short probe
on the present device (without `--bench`), at the bench's batch and input size, scaled to the run's resolution by
pixel count (cost per image grows with H x W). The probe bounds its memory: one variant at a time beside the
first-order model, each in a process of its own, on a batch with at most the pixels of `--probe-batch` images of
64 px (fewer images at larger sizes); it refuses at once when the device has less memory free than the weights,
gradients and AdamW moments of the two networks need. Detection runs (COCO) are listed but not projected: the bench
measures classifiers only.

Device-hours = device-seconds / 3600, for any number of devices (a DDP job's images are split over its devices).

Energy and CO2e are projections too, labelled as such in every output (`energy_how`): images x the bench's
joules per image (measured by NVML on a GPU, CodeCarbon's estimate or RAPL on a CPU; scaled by pixel count as the
time is), or, with `--power-w` (e.g. a GPU's rated board power), device-hours x that power. CO2e = energy x
`--carbon-intensity` (g CO2e/kWh; default the training runs' 475, the world average).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

from ..config import DEFAULT_TRAINABLE
from .design import build_registry
from .registry import Registry
from .sheet import Sheet, read_sheet
from .workflow_config import load_workflow_config

# Training images, evaluation images (the split a run evaluates on) and classes of each dataset.
# ImageNet-21K: the fall11 release (14,197,122 images, 21,841 classes); it has no official validation split, and a
# run on it evaluates on what its root's val/ holds, counted here as ImageNet-1K's 50 per class unless eval_limit.
DATASETS = {
    "fashion_mnist": dict(train=60_000, eval=10_000, classes=10),
    "imagenet1k": dict(train=1_281_167, eval=50_000, classes=1000),
    "imagenet21k": dict(train=14_197_122, eval=50 * 21_841, classes=21_841),
}
COLUMNS = ["exp", "run", "arch", "resolution", "train_images", "eval_images", "train_s", "eval_s", "device_hours",
           "energy_kwh", "co2e_kg"]


@dataclass
class Work:
    """What a run computes: (bench variant, mode, images) per part, at the run's resolution."""
    arch: str
    v1_arch: Optional[str]
    resolution: int
    parts: list  # [(variant, mode, images, kind)] with kind "train" or "eval"
    kernel: str = "bilinear"  # the adapter's kernel: an rbf term costs what the bench's adapted_<kernel> costs


def load_registry(configfile: Union[str, Path], sheet: Union[str, Path, None] = None) -> tuple[dict, Sheet, Registry]:
    """(the validated workflow config, its backbone sheet, its registry) of workflow config file `configfile`, the
    data and weights existence not checked. sheet: the sheet file instead of the config's `sheet`; relative paths
    (the config's too) are relative to the working directory."""
    config = load_workflow_config(configfile)
    sheet = read_sheet(sheet if sheet is not None else config["sheet"])
    return config, sheet, build_registry(config, sheet, check_files=False)


def _images(data) -> tuple:
    """(training images per epoch, evaluation images per evaluation) of a resolved data config."""
    if data.dataset not in DATASETS:
        raise ValueError(f"quadranet plan knows no image count of data.dataset={data.dataset!r}; "
                         f"known: {sorted(DATASETS)}")
    d = DATASETS[data.dataset]
    classes = len(data.classes) if data.classes else d["classes"]
    train = round(d["train"] * classes / d["classes"])
    if data.train_per_class:
        train = min(train, data.train_per_class * classes)
    if data.train_limit:
        train = min(train, data.train_limit)
    if data.eval_split == "val":
        train, evaluate = train - data.val_size, data.val_size
    else:
        evaluate = round(d["eval"] * classes / d["classes"])
    if data.eval_limit:
        evaluate = min(evaluate, data.eval_limit)
    return train, evaluate


def _variant(cfg, trainable) -> str:
    groups = set(trainable)
    if cfg.method == "scratch":
        if cfg.model.arch.startswith("quadranet_v1_"):
            return "v1"
        return "adapted" if cfg.model.quadratic else "first_order"
    if groups == {"head"}:
        return "head"
    if cfg.method == "finetune":
        return "first_order"
    if cfg.method == "lora":
        return "lora"
    if "all" in groups or "primary" in groups:
        return "adapted_memeff" if cfg.adapter.memory_efficient else "adapted"
    return "adapted_frozen"


KERNEL_SCALED = ("adapted", "adapted_frozen", "adapted_memeff")
EVAL_VARIANT = {"first_order": "first_order", "head": "first_order", "adapted": "adapted", "adapted_frozen": "adapted",
                "adapted_memeff": "adapted", "v1": "v1", "lora": "lora"}


def run_work(run_cfg: dict, v1_arch: Optional[str] = None) -> Work:
    """The images each part of a run computes, from its (workflow) config."""
    from ..classify.config import load_config

    cfg = load_config(base=run_cfg)
    train_images, eval_images = _images(cfg.data)
    steps_per_epoch = train_images // cfg.data.batch_size  # the sampler drops the last incomplete batch
    stages = [(s.epochs, s.trainable) for s in cfg.train.stages] or [(cfg.train.epochs, DEFAULT_TRAINABLE[cfg.method])]
    parts, epoch = [], 0
    total = sum(e for e, _ in stages)
    at_steps = set(cfg.train.eval_steps)  # evaluations at chosen optimizer steps, as classify/train.py makes them
    for epochs, trainable in stages:
        variant = _variant(cfg, trainable)
        parts.append((variant if variant != "head" else "first_order", "infer" if variant == "head" else "train",
                      steps_per_epoch * cfg.data.batch_size * epochs, "train"))
        ends = range(epoch + 1, epoch + epochs + 1)
        evals = sum(1 for e in ends if e % cfg.train.eval_every == 0 or e == total or e * steps_per_epoch in at_steps)
        evals += sum(1 for s in at_steps if epoch * steps_per_epoch < s < (epoch + epochs) * steps_per_epoch
                     and s % steps_per_epoch)
        parts.append((EVAL_VARIANT[variant], "infer", evals * eval_images, "eval"))
        epoch += epochs
    return Work(arch=trained_arch(cfg), v1_arch=v1_arch, resolution=cfg.data.resolution, parts=parts,
                kernel=cfg.adapter.kernel)


def trained_arch(cfg) -> str:
    """The timm architecture a run trains: the packaged ImageNet weights (`model.pretrained: offline`) need their
    own (e.g. tf_efficientnet_lite0, TF "same" padding, which ran about 1.3x slower here than the
    efficientnet_lite0 a run from random init builds)."""
    from ..models.pretrained import PRETRAINED

    if cfg.model.pretrained == "offline" and cfg.model.arch in PRETRAINED:
        return PRETRAINED[cfg.model.arch].arch
    return cfg.model.arch


# the bench variants a run's parts use (`_variant`, EVAL_VARIANT; head-only runs use first_order), first_order first
PROBED = tuple(v for v in EVAL_VARIANT if v != "head")
PROBE_INPUT_SIZE = 64  # px: a probe batch has at most the pixels of --probe-batch images of this size
TRAIN_BYTES_PER_PARAM = 16  # a network training with AdamW: fp32 weight, gradient and the two moments


def probe_batch(batch: int, size: int) -> int:
    """The probe's batch at input `size`: `batch` images, or fewer at sizes above PROBE_INPUT_SIZE, so that a batch
    has no more pixels than `batch` images of PROBE_INPUT_SIZE px (at least one image): the activations a training
    step keeps grow with the pixels of its batch."""
    return max(1, min(batch, batch * PROBE_INPUT_SIZE ** 2 // size ** 2))


def probe_memory(params: int) -> int:
    """Bytes a probe of a network of `params` parameters needs at least, activations aside: the first-order network
    and one variant, each training with AdamW, and the bench's first-order base they are copied from."""
    return params * (2 * TRAIN_BYTES_PER_PARAM + 4)


def parameter_count(arch: str) -> int:
    """Parameters of timm model `arch` (1000 classes), counted without allocating them."""
    import timm
    import torch

    from .. import models  # noqa: F401  (registers quadranet_v1_* with timm)

    with torch.device("meta"):
        return sum(p.numel() for p in timm.create_model(arch).parameters())


def free_memory(device) -> int:
    """Bytes free for a probe on torch.device `device`: the GPU's free memory, or the memory the OS reports
    available (MemAvailable of /proc/meminfo, else the free pages)."""
    import os

    import torch

    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:"))
    except (OSError, StopIteration):
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def check_probe_memory(models, free: int) -> None:
    """Refuse, before anything runs, a probe of (model, input size, V1 size or None) `models` when one of them needs
    more than `free` bytes (`probe_memory` of its largest variant, the V1 network included)."""
    for model, size, v1_size in sorted(models, key=str):
        params = max(parameter_count(model), parameter_count(f"quadranet_v1_{v1_size}") if v1_size else 0)
        needed = probe_memory(params)
        if needed > free:
            raise ValueError(f"probing {model} at {size} px needs at least {needed / 2**30:.1f} GiB (two networks of "
                             f"{params / 1e6:.1f} M parameters training with AdamW, activations aside), more than the "
                             f"{free / 2**30:.1f} GiB free on this device; measure it where it fits (`quadranet bench "
                             f"--model {model} --input-size {size} --out {model}.csv`) and pass the CSV to --bench")


def probe(models, device="auto", batch=32, steps=3, warmup=1, kernels=(), free: Optional[int] = None) -> "pd.DataFrame":
    """A short `quadranet bench` on the present device of each (model, input size, V1 size or None): the variants the
    plan uses (PROBED; `v1` where a V1 size is given; `adapted_<kernel>` for each of `kernels` other than bilinear),
    train and infer, `steps` timed steps after `warmup`, AdamW as the runs use, on `probe_batch` images.

    Each variant is benchmarked beside the first-order network (whose rows are kept once) in a process of its own
    (`benchmark_alone`), so the probe holds two networks at a time. free: bytes free on the device (default:
    measured, `free_memory`); a model needing more is refused before anything runs (`check_probe_memory`)."""
    import pandas as pd

    from ..bench.speed import resolve_device

    dev = resolve_device(device)
    check_probe_memory(models, free_memory(dev) if free is None else free)
    frames = []
    extra = [f"adapted_{k}" for k in sorted(set(kernels) - {"bilinear"})]
    for model, size, v1_size in sorted(models, key=str):
        variants = [v for v in PROBED if v != "v1" or v1_size] + extra
        n = probe_batch(batch, size)
        print(f"plan: probing {model} at {size} px on {dev}, batch {n}: {', '.join(variants)}, {steps} steps each",
              flush=True)
        for variant in variants:
            df = benchmark_alone(model=model, variants=[variant], modes=("train", "infer"), batch=n, input_size=size,
                                 steps=steps, warmup=warmup, device=str(dev), v1_size=v1_size, optimizer="adamw")
            frames.append(df if variant == "first_order" else df[df["variant"] != "first_order"])
    return pd.concat(frames, ignore_index=True)


def benchmark_alone(**kwargs) -> "pd.DataFrame":
    """`quadranet.bench.speed.benchmark(**kwargs)` in a new process: all it allocated goes back to the system when
    it ends, whatever the allocator keeps or a reference cycle holds, before the next benchmark starts."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    from ..bench.speed import benchmark

    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        try:
            return pool.submit(benchmark, **kwargs).result()
        except BrokenProcessPool:
            raise RuntimeError(f"the probe of {kwargs['model']} ({', '.join(kwargs['variants'])}) at "
                               f"{kwargs['input_size']} px, batch {kwargs['batch']}, ended without a result (killed, "
                               f"e.g. for memory); give a smaller --probe-batch, or measure it where it fits and "
                               f"pass the CSV to --bench") from None


def bench_model(rid, work, backbone_of, sheet: Optional[Sheet]) -> tuple:
    """(bench model, V1 size or None) whose bench rows give run `rid`'s throughput: a V1 network's is the `v1`
    variant of its backbone's bench (`quadranet bench --model <backbone arch> --v1-size <size>`)."""
    row = sheet.rows.get(backbone_of.get(rid)) if sheet is not None else None
    if work.arch.startswith("quadranet_v1_"):
        return (row["arch"] if row is not None else work.arch), work.arch.removeprefix("quadranet_v1_")
    v1 = row["v1_arch"] if row is not None and row["v1_arch"] else None
    return work.arch, (v1.removeprefix("quadranet_v1_") if v1 else None)


def throughput(bench, model, variant, mode, resolution) -> Optional[tuple]:
    """(images/s, joules per image or NaN) of (model, variant, mode) at `resolution`, from the bench row at the
    nearest input size, scaled by pixel count; None when the bench has no such row."""
    rows = bench[(bench["model"] == model) & (bench["variant"] == variant) & (bench["mode"] == mode)]
    if rows.empty:
        return None
    row = rows.iloc[(rows["input_size"] - resolution).abs().argsort().iloc[0]]
    scale = (row["input_size"] / resolution) ** 2
    return float(row["images_per_s"]) * scale, float(row.get("joules_per_image", math.nan)) / scale


def energy_how(bench, power_w: Optional[float]) -> str:
    """How `project` obtains energy: the label every output of the plan carries."""
    if power_w is not None:
        return f"projected: device-hours x {power_w:g} W (--power-w)"
    sources = sorted({str(v).split(" (")[0] for v in bench.get("energy_source", []) if isinstance(v, str)})
    if not sources or "joules_per_image" not in bench:
        return "none: the bench CSVs measured no energy (give --power-w, or rerun the bench)"
    return "projected: images x the bench's joules per image (" + "; ".join(sources) + ")"


def roles(manifest) -> tuple:
    """(run id -> its first experiment, run id -> its backbone) from the workflow's manifest rows."""
    exp_of, backbone_of = {}, {}
    for row in manifest:
        exp_of.setdefault(row["run"], row["exp"])
        backbone_of.setdefault(row["run"], row["backbone"])
    return exp_of, backbone_of


def project(runs: dict, manifest: list, bench, sheet: Optional[Sheet] = None, power_w: Optional[float] = None,
            carbon_intensity: Optional[float] = None) -> "pd.DataFrame":
    """One row per run: its experiment, images, projected train / eval device-seconds, device-hours, kWh and kg
    CO2e (`energy_how` says how the energy is projected)."""
    import pandas as pd

    from ..run.accounting import DEFAULT_CARBON_INTENSITY

    intensity = DEFAULT_CARBON_INTENSITY if carbon_intensity is None else carbon_intensity
    exp_of, backbone_of = roles(manifest)
    rows, missing = [], set()
    for rid, cfg in runs.items():
        work = run_work(cfg)
        model, _ = bench_model(rid, work, backbone_of, sheet)
        seconds = {"train": 0.0, "eval": 0.0}
        images = {"train": 0, "eval": 0}
        joules = 0.0
        for variant, mode, n, kind in work.parts:
            images[kind] += n
            if n == 0:
                continue
            rate = throughput(bench, model, variant, mode, work.resolution)
            if rate is not None and work.kernel != "bilinear" and variant in KERNEL_SCALED:
                # the bench has the kernel only as the all-trainable adapter: scale by its cost against bilinear's
                variant = f"adapted_{work.kernel}"
                kernel = throughput(bench, model, variant, mode, work.resolution)
                base = throughput(bench, model, "adapted", mode, work.resolution)
                rate = None if kernel is None or base is None else (
                    rate[0] * kernel[0] / base[0], rate[1] * kernel[1] / base[1])
            if rate is None:
                missing.add((model, variant, mode))
                seconds[kind] = math.nan
            else:
                seconds[kind] += n / rate[0]
                joules += n * rate[1]
        hours = (seconds["train"] + seconds["eval"]) / 3600
        kwh = hours * power_w / 1000 if power_w is not None else joules / 3.6e6
        rows.append(dict(exp=exp_of.get(rid, rid.split("/")[0]), run=rid, arch=work.arch, resolution=work.resolution,
                         train_images=images["train"], eval_images=images["eval"], train_s=seconds["train"],
                         eval_s=seconds["eval"], device_hours=hours, energy_kwh=kwh, co2e_kg=kwh * intensity / 1000))
    if missing:
        models = sorted({m for m, _, _ in missing})
        raise ValueError(f"the bench has no throughput of {len(missing)} (model, variant, mode) the runs need, models "
                         f"{models}; leave out --bench to probe the present device, or measure each model M at the "
                         f"runs' resolution R (`quadranet bench --model M --input-size R --out M.csv`, with "
                         f"--v1-size S where it has a V1 counterpart) and pass the CSVs to --bench")
    return pd.DataFrame(rows, columns=COLUMNS)


def summary(df) -> "pd.DataFrame":
    """Per experiment, then the whole config: runs, images and projected device-hours."""
    import pandas as pd

    sums = dict(train_images=("train_images", "sum"), eval_images=("eval_images", "sum"),
                device_hours=("device_hours", "sum"), energy_kwh=("energy_kwh", lambda v: v.sum(min_count=len(v))),
                co2e_kg=("co2e_kg", lambda v: v.sum(min_count=len(v))))
    per = df.groupby("exp", sort=False).agg(runs=("run", "size"), **sums)
    total = pd.DataFrame([dict(runs=len(df), **{k: f(df[c]) if callable(f) else df[c].sum()
                                               for k, (c, f) in sums.items()})], index=["total"])
    return pd.concat([per, total]).rename_axis("exp").reset_index()


def compare_reference(df, reference) -> "pd.DataFrame":
    """Each planned run that the reference folder holds, projected against measured device-seconds (train + eval,
    the cost metrics.json reports), and the images counted against the run's own count."""
    import json

    import pandas as pd

    rows = []
    for _, r in df.iterrows():
        path = Path(reference) / "runs" / r["run"] / "metrics.json"
        if not path.is_file():
            continue
        m = json.loads(path.read_text())
        measured = m["device_seconds"]["train"] + m["device_seconds"]["eval"]
        projected = r["train_s"] + r["eval_s"]
        kwh = m.get("energy_kwh")
        rows.append(dict(run=r["run"], exp=r["exp"], images_planned=r["train_images"], images_seen=m["images_seen"],
                         projected_s=projected, measured_s=measured, error=projected / measured - 1,
                         projected_kwh=r["energy_kwh"], reference_kwh=math.nan if kwh is None else kwh,
                         reference_energy_source=m.get("energy_source")))
    return pd.DataFrame(rows)


def probe_models(runs: dict, manifest: list, sheet: Optional[Sheet]) -> tuple[set, set]:
    """What `probe` measures for `runs`: {(bench model, resolution, V1 size or None)} and the adapters' kernels."""
    _, backbone_of = roles(manifest)
    models, kernels = {}, set()  # (model, resolution) -> V1 size
    for rid, cfg in runs.items():
        work = run_work(cfg)
        model, v1_size = bench_model(rid, work, backbone_of, sheet)
        models[(model, work.resolution)] = models.get((model, work.resolution)) or v1_size
        kernels.add(work.kernel)
    return {(m, r, v) for (m, r), v in models.items()}, kernels
