"""The detection run config: YAML + `section.key=value` overrides, built with the config kit (`quadranet.config`)
as the classification config is.

The defaults are the embedded run (160 Fashion-MNIST canvases of 96 px, a small Mask R-CNN on
EfficientNet-Lite0, 5 epochs). `PRESETS` hold the paper-scale settings: COCO 2017
with the 1x and 3x schedules of Detectron2 (90k / 270k iterations at batch 16, about 12 / 36 epochs, lr x0.1 at
60k and 80k / 210k and 250k iterations), torchvision's Mask R-CNN / FCOS head sizes, SGD at lr 0.02.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Union

from ..config import (COMMON_CHOICES, DEFAULT_TRAINABLE, RUN_CONTROL, AdapterConfig, ConfigError, TaskConfig, build,
                      check_table, config_data, hash_without)
from ..config import METHODS as ALL_METHODS
from ..config import TRAINABLE as ALL_TRAINABLE
from .synthetic import CanvasSpec

__all__ = ["DETECTORS", "DetectionConfig", "PRESETS", "SCHEDULES", "config_hash", "default_trainable", "load_config",
           "validate"]

METHODS = tuple(m for m in ALL_METHODS if m != "lora")  # no LoRA baseline for detection
DETECTORS = ("maskrcnn", "fcos", "retinanet")
DATASETS = ("fashion_mnist_canvas", "coco")
# primary: backbone minus quadratic terms; head: all but the backbone
TRAINABLE = tuple(g for g in ALL_TRAINABLE if g != "lora")
# schedule -> (epochs, fractions of training at which lr drops x0.1): Detectron2's 1x (60k, 80k of 90k
# iterations) and 3x (210k, 250k of 270k); 90k x 16 images ~ 12 epochs of COCO train2017.
SCHEDULES = {"1x": (12, (2 / 3, 8 / 9)), "3x": (36, (7 / 9, 25 / 27))}
DEFAULT_LR_STEPS = SCHEDULES["1x"][1]


@dataclass
class DetModelConfig:
    detector: str = "maskrcnn"  # maskrcnn (boxes + masks), fcos or retinanet (boxes only, lighter)
    backbone: str = "efficientnet_lite0"  # a timm name; names with offline weights map to the weights' arch
    # first-order weights of the backbone: none (random), offline (quadranet.pretrained), timm (timm's hub,
    # needs network), or a classification run folder / .safetensors of a first-order model
    pretrained: str = "none"
    quadratic: bool = False  # scratch only: quadratize the backbone with random primary weights
    # backbone levels fed to the FPN; None: the last 4 (maskrcnn) or 3 (fcos, retinanet), strides 4-32 / 8-32 on
    # backbones with a stride-2 level (EfficientNet, ResNet: levels 1-4 / 2-4) and on those without (ConvNeXt)
    out_indices: Optional[list] = None
    fpn_channels: int = 64
    anchor_size: int = 16  # maskrcnn / retinanet anchor side at the finest FPN level, doubling per level
    box_head_dim: int = 256  # maskrcnn box head MLP width (torchvision: 1024)
    mask_head_layers: list = field(default_factory=lambda: [64, 64])  # maskrcnn mask head (torchvision: 4 x 256)
    rpn_proposals: int = 150  # maskrcnn proposals kept per image in training (half at test); torchvision 2000
    roi_batch: int = 64  # maskrcnn RoIs sampled per image for the box head (torchvision: 512)
    score_thresh: float = 0.05  # detections below are dropped before evaluation
    freeze_bn: Optional[bool] = None  # backbone BatchNorm frozen (statistics and affine); None: when pretrained


# The canvas section: synthetic.CanvasSpec's fields and defaults, mutable here for overrides (validate()
# builds the frozen spec, which checks them).
CanvasConfig = dataclasses.make_dataclass(
    "CanvasConfig", [(f.name, f.type, f.default) for f in dataclasses.fields(CanvasSpec)])


@dataclass
class DetDataConfig:
    dataset: str = "fashion_mnist_canvas"
    # coco: folder holding annotations/instances_<split>.json and <split>/ (None: $QUADRANET_COCO);
    # fashion_mnist_canvas: where canvas sets are cached (None: $QUADRANET_CACHE or ~/.cache/quadranet)
    root: Optional[str] = None
    train_split: Optional[str] = None  # None: train2017 (coco), train (canvas)
    val_split: Optional[str] = None  # None: val2017 (coco), val (canvas)
    train_images: Optional[str] = None  # explicit paths, instead of the layout under root
    train_ann: Optional[str] = None
    val_images: Optional[str] = None
    val_ann: Optional[str] = None
    canvas: CanvasConfig = field(default_factory=CanvasConfig)
    fashion_mnist_root: Optional[str] = None
    min_size: int = 96  # the detector resizes images so the short side is min_size, long side <= max_size
    max_size: int = 96
    multiscale: Optional[list] = None  # training short sides, one drawn per image; the last must be min_size
    batch_size: int = 8
    eval_batch_size: int = 16
    num_workers: int = 0
    train_limit: Optional[int] = None
    eval_limit: Optional[int] = None
    keep_empty: bool = False  # keep training images without annotations (as negatives)
    flip: bool = True  # random horizontal flips in training


@dataclass
class DetTrainConfig:
    schedule: Optional[str] = None  # "1x" / "3x": epochs and lr steps of Detectron2's schedules
    epochs: Optional[int] = 5  # null when a schedule is set
    lr_steps: Optional[list] = None  # fractions of training where lr drops x0.1; None: the schedule's (1x)
    optimizer: str = "adamw"
    lr: float = 1e-3
    weight_decay: float = 1e-4
    momentum: float = 0.9  # sgd only
    warmup_steps: int = 20  # linear warmup from lr x warmup_factor
    warmup_factor: float = 0.001
    trainable: list = field(default_factory=list)  # TRAINABLE groups; empty: the method's default
    grad_clip: Optional[float] = None
    amp: str = "auto"  # auto: bf16 on GPU, none on CPU
    device: str = "auto"
    eval_every: int = 0  # epochs; 0: only at the end
    eval_at_start: bool = False
    # run control: left out of the config hash (config.RUN_CONTROL); the same fields as the classification
    # config's, repeated on purpose (see the comment there)
    log_every: int = 10  # steps
    checkpoint_every: int = 100  # steps; also at every epoch end
    checkpoint_dir: Optional[str] = None  # None: <out>/checkpoints
    progress: str = "auto"  # auto: a bar on a terminal, plain lines otherwise; "bar", "lines", "none"
    keep_checkpoint: bool = False  # keep the last checkpoint once the run completed
    carbon_intensity: Optional[float] = None  # g CO2e per kWh of the grid; None: the world average (docs/training.md)


@dataclass
class DetectionConfig(TaskConfig):
    model: DetModelConfig = field(default_factory=DetModelConfig)
    adapter: AdapterConfig = field(default_factory=AdapterConfig)
    data: DetDataConfig = field(default_factory=DetDataConfig)
    train: DetTrainConfig = field(default_factory=DetTrainConfig)

    @property
    def epochs(self) -> int:
        return SCHEDULES[self.train.schedule][0] if self.train.schedule else self.train.epochs

    @property
    def lr_steps(self) -> tuple:
        if self.train.lr_steps is not None:
            return tuple(self.train.lr_steps)
        return SCHEDULES[self.train.schedule][1] if self.train.schedule else DEFAULT_LR_STEPS

    @property
    def out_indices(self) -> tuple:
        if self.model.out_indices is not None:
            return tuple(self.model.out_indices)
        return (-4, -3, -2, -1) if self.model.detector == "maskrcnn" else (-3, -2, -1)

    @property
    def masks(self) -> bool:
        return self.model.detector == "maskrcnn"

    @property
    def freeze_bn(self) -> bool:
        return self.model.pretrained != "none" if self.model.freeze_bn is None else self.model.freeze_bn


_COCO_SCALE = {
    "data": {"dataset": "coco", "min_size": 800, "max_size": 1333, "batch_size": 16, "eval_batch_size": 8,
             "num_workers": 8},
    "model": {"fpn_channels": 256, "anchor_size": 32, "box_head_dim": 1024, "mask_head_layers": [256] * 4,
              "rpn_proposals": 2000, "roi_batch": 512},
    "train": {"optimizer": "sgd", "lr": 0.02, "weight_decay": 1e-4, "momentum": 0.9, "warmup_steps": 1000,
              "warmup_factor": 0.001, "log_every": 20, "checkpoint_every": 2000, "epochs": None},
}
PRESETS = {
    "embedded": {},
    "coco_1x": {**_COCO_SCALE, "train": {**_COCO_SCALE["train"], "schedule": "1x"}},
    # Detectron2's 3x recipe also trains at several scales (short side 640..800)
    "coco_3x": {**_COCO_SCALE, "data": {**_COCO_SCALE["data"], "multiscale": [640, 672, 704, 736, 768, 800]},
                "train": {**_COCO_SCALE["train"], "schedule": "3x"}},
}

CHOICES = {
    **COMMON_CHOICES, "method": METHODS, "model.detector": DETECTORS, "data.dataset": DATASETS,
    "train.schedule": tuple(SCHEDULES) + (None,),
}
POSITIVE = ("model.fpn_channels", "model.anchor_size", "model.box_head_dim", "model.rpn_proposals",
            "model.roi_batch", "adapter.rank", "adapter.dilation", "adapter.kernel_size", "adapter.sigma",
            "data.min_size", "data.max_size", "data.batch_size", "data.eval_batch_size", "data.train_limit",
            "data.eval_limit", "train.epochs", "train.lr", "train.log_every", "train.checkpoint_every",
            "train.grad_clip", "train.warmup_factor", "train.carbon_intensity")
NON_NEGATIVE = ("seed", "data.num_workers", "train.weight_decay", "train.momentum", "train.warmup_steps",
                "train.eval_every", "model.score_thresh")


def default_trainable(cfg: DetectionConfig) -> list:
    return list(cfg.train.trainable) or DEFAULT_TRAINABLE[cfg.method]


def validate(cfg: DetectionConfig) -> DetectionConfig:
    """Check values and the combinations that make a detection run; raise ConfigError naming the key."""
    check_table(cfg, CHOICES, POSITIVE, NON_NEGATIVE)
    m, d, t = cfg.model, cfg.data, cfg.train
    if cfg.method in ("adapt", "finetune") and m.pretrained == "none":
        raise ConfigError(f"method={cfg.method!r} starts from pretrained first-order weights: set model.pretrained "
                          f"to 'offline', 'timm' or a first-order classification run folder / .safetensors file")
    if cfg.method == "scratch" and m.pretrained != "none":
        raise ConfigError(f"method='scratch' trains from random init; model.pretrained={m.pretrained!r} must be 'none'")
    if m.quadratic and cfg.method != "scratch":
        raise ConfigError("model.quadratic=true is for method scratch (adapt quadratizes the backbone by itself)")
    bad = [g for g in t.trainable if g not in TRAINABLE]
    if bad:
        raise ConfigError(f"train.trainable={t.trainable!r}: expected a list of {list(TRAINABLE)}")
    has_quadratic = cfg.method == "adapt" or m.quadratic
    if "quadratic" in default_trainable(cfg) and not has_quadratic:
        raise ConfigError(f"train.trainable has 'quadratic' but method={cfg.method!r} has no quadratic terms "
                          f"(use method adapt, or scratch with model.quadratic=true)")
    if m.out_indices is not None:
        oi = m.out_indices
        if (not oi or any(isinstance(i, bool) or not isinstance(i, int) or i < 0 for i in oi)
                or list(oi) != sorted(set(oi))):
            raise ConfigError(f"model.out_indices={oi!r} must be increasing backbone level indices >= 0")
        if m.detector == "maskrcnn" and len(oi) != 4:
            raise ConfigError(f"model.out_indices={oi!r}: maskrcnn takes 4 levels (strides 4-32 in the usual setup)")
    if not m.mask_head_layers or any(isinstance(c, bool) or not isinstance(c, int) or c <= 0
                                     for c in m.mask_head_layers):
        raise ConfigError(f"model.mask_head_layers={m.mask_head_layers!r} must be a non-empty list of channel counts")
    if m.detector == "fcos" and m.fpn_channels % 32:
        raise ConfigError(f"model.fpn_channels={m.fpn_channels}: fcos's head normalises in 32 groups (torchvision "
                          f"FCOSHead), so the channels must be a multiple of 32")
    if not m.score_thresh < 1:
        raise ConfigError(f"model.score_thresh={m.score_thresh!r} must lie in [0, 1)")
    if d.multiscale is not None:
        ms = d.multiscale
        if (not ms or any(isinstance(v, bool) or not isinstance(v, int) or v <= 0 for v in ms)
                or list(ms) != sorted(set(ms)) or ms[-1] != d.min_size):
            raise ConfigError(f"data.multiscale={ms!r} must be increasing positive sizes ending at data.min_size="
                              f"{d.min_size} (evaluation uses the last)")
    if d.min_size > d.max_size:
        raise ConfigError(f"data.min_size={d.min_size} exceeds data.max_size={d.max_size}")
    if t.lr_steps is not None and (any(isinstance(s, bool) or not isinstance(s, (int, float)) or not 0 < s < 1
                                       for s in t.lr_steps) or list(t.lr_steps) != sorted(t.lr_steps)):
        raise ConfigError(f"train.lr_steps={t.lr_steps!r} must be increasing fractions of training in (0, 1)")
    if (t.schedule is None) == (t.epochs is None):
        raise ConfigError(f"train.schedule={t.schedule!r} and train.epochs={t.epochs!r}: set exactly one of them "
                          f"(a schedule fixes the epochs: 1x = 12, 3x = 36)")
    if d.dataset == "coco":
        pairs = (("train_images", "train_ann"), ("val_images", "val_ann"))
        for a, b in pairs:
            if (getattr(d, a) is None) != (getattr(d, b) is None):
                raise ConfigError(f"data.{a} and data.{b} go together: give both or neither")
    else:
        for k in ("train_images", "train_ann", "val_images", "val_ann"):
            if getattr(d, k) is not None:
                raise ConfigError(f"data.{k} is for data.dataset='coco'; the canvas set writes its own files")
        try:
            CanvasSpec(**dataclasses.asdict(d.canvas))
        except ValueError as e:
            raise ConfigError(f"data.canvas: {e}") from None
    return cfg


def load_config(path: Union[str, Path, None] = None, overrides: tuple = (), preset: Optional[str] = None,
                base: Optional[dict] = None) -> DetectionConfig:
    """The detection config: `preset` (a key of PRESETS), then dict `base`, then YAML file `path` (merged in that
    order), then `overrides` ('a.b=value'), validated."""
    if preset is not None and preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; expected one of {sorted(PRESETS)}")
    return validate(build(DetectionConfig, config_data(path, overrides, PRESETS[preset] if preset else None, base)))


def config_hash(cfg: DetectionConfig) -> str:
    """sha256 (16 hex digits) of the config minus the run-control keys."""
    return hash_without({**cfg.to_dict(), "task": "detection"}, RUN_CONTROL)
