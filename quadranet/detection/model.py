"""The model of a detection run: a torchvision detector (Mask R-CNN, FCOS, RetinaNet) on a timm backbone with
a feature pyramid.

The backbone is any timm model created with `features_only=True`; its levels `out_indices` feed a
torchvision `FeaturePyramidNetwork` (as `BackboneWithFPN` does for torchvision's own backbones). Methods,
as in classification (arXiv 2405.03192):
- scratch: random backbone (quadratized with `model.quadratic`, the high-order network from scratch);
- adapt: pretrained first-order backbone, then `quadratize` (primary terms = the pretrained layers,
  quadratic terms zero at init), so at init the backbone computes exactly the pretrained features;
- finetune: the same pretrained backbone, first-order.
FPN and detection heads are always new. Backbone BatchNorm is frozen (torchvision's FrozenBatchNorm2d
practice) when the backbone is pretrained, as detection batches are small.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Optional

import torch
from torch import nn
from torchvision.models.detection import FCOS, MaskRCNN, RetinaNet
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.ops import MultiScaleRoIAlign
from torchvision.ops.feature_pyramid_network import FeaturePyramidNetwork, LastLevelMaxPool, LastLevelP6P7

from .. import convert
from ..config import ConfigError
from ..models.build import create_model, quadratize_options, resolve_arch, weights_file
from ..models.pretrained import PRETRAINED
from .config import DetectionConfig

__all__ = ["TimmFPNBackbone", "build_backbone", "build_model", "parameter_groups", "set_trainable"]


class TimmFPNBackbone(nn.Module):
    """A timm `features_only` model followed by a feature pyramid; returns an OrderedDict of maps, each of
    `out_channels` channels ('0'.. for the backbone levels, then the extra levels)."""

    def __init__(self, body: nn.Module, out_channels: int, extra_blocks: Optional[nn.Module] = None):
        super().__init__()
        self.body = body
        self.fpn = FeaturePyramidNetwork(body.feature_info.channels(), out_channels, extra_blocks=extra_blocks)
        self.out_channels = out_channels

    @property
    def strides(self) -> list:
        return list(self.body.feature_info.reduction())

    def forward(self, x: torch.Tensor) -> "OrderedDict[str, torch.Tensor]":
        feats = self.body(x)
        return self.fpn(OrderedDict((str(i), f) for i, f in enumerate(feats)))


def _create_body(cfg: DetectionConfig, pretrained: bool = False) -> nn.Module:
    try:
        return create_model(cfg.model.backbone, key="model.backbone", pretrained=pretrained, features_only=True,
                            out_indices=cfg.out_indices)
    except (IndexError, AssertionError) as e:
        raise ConfigError(f"model.out_indices={list(cfg.out_indices)} do not fit backbone "
                          f"{cfg.model.backbone!r}: {e}") from None


def _load_body(body: nn.Module, state: dict, source: str) -> int:
    """Load the entries of a whole-model state dict `state` that the features model `body` holds (timm's
    FeatureListNet names nested modules 'stem_0' for 'stem.0'); every body entry must be found. Returns
    how many entries of `state` went unused (the classifier head, ...)."""
    own = body.state_dict()
    picked, missing, used = {}, [], set()
    for k, v in own.items():
        head, _, rest = k.partition(".")
        cand = k if k in state else ".".join([head.replace("_", "."), rest]) if rest else head.replace("_", ".")
        if cand not in state:
            missing.append(k)
            continue
        if tuple(state[cand].shape) != tuple(v.shape):
            raise ConfigError(f"model.pretrained={source!r}: {cand!r} has shape {tuple(state[cand].shape)} but the "
                              f"backbone expects {tuple(v.shape)} (another architecture, or trained on 1 channel?)")
        picked[k] = state[cand]
        used.add(cand)
    if missing:
        raise ConfigError(f"model.pretrained={source!r} does not fit backbone {type(body).__name__}: "
                          f"{len(missing)} entries missing, e.g. {missing[:4]}")
    body.load_state_dict(picked)
    return len(set(state) - used)


def _source_is_quadratic(source: str) -> bool:
    from safetensors import safe_open

    try:
        path = weights_file(source)
    except ConfigError:
        return False
    with safe_open(str(path), "pt") as f:
        return any(".primary." in k for k in f.keys())


def build_backbone(cfg: DetectionConfig, weights: bool = True) -> tuple[TimmFPNBackbone, dict]:
    """The backbone with its FPN, its first-order weights loaded and quadratized as the method says.
    `weights=False` builds the same structure at random init (to load a finished run's weights into)."""
    m = cfg.model
    info = {"backbone_arch": resolve_arch(m.backbone), "pretrained": m.pretrained}
    if not weights:
        body = _create_body(cfg)
        if m.pretrained not in ("none", "timm", "offline") and _source_is_quadratic(m.pretrained):
            convert.quadratize(body, **quadratize_options(cfg.adapter))
    elif m.pretrained == "none":
        body = _create_body(cfg)
    elif m.pretrained == "timm":
        body = _create_body(cfg, pretrained=True)
    elif m.pretrained == "offline":
        if m.backbone not in PRETRAINED:
            raise ConfigError(f"model.pretrained='offline' has weights for {sorted(PRETRAINED)}, not "
                              f"model.backbone={m.backbone!r}; pass a classification run folder instead")
        from ..models.pretrained import pretrained as offline_pretrained

        full = offline_pretrained(m.backbone)
        body = _create_body(cfg)
        info["unused_pretrained_entries"] = _load_body(body, full.state_dict(), m.pretrained)
        info["pretrained_file"] = full.pretrained_cfg.get("file")
    else:
        from safetensors.torch import load_file

        path = weights_file(m.pretrained, "'none', 'offline', 'timm' or the --out folder of a finished "
                                             "classification run")
        state = load_file(str(path))
        body = _create_body(cfg)
        if any(".primary." in k for k in state):
            if cfg.method == "adapt":
                raise ConfigError(f"model.pretrained={m.pretrained!r} is already quadratized; method adapt "
                                  f"quadratizes first-order weights (use method finetune to train it further)")
            convert.quadratize(body, **quadratize_options(cfg.adapter))
            info["pretrained_quadratic"] = True
        info["unused_pretrained_entries"] = _load_body(body, state, m.pretrained)
        info["pretrained_file"] = str(path)
    if cfg.method == "adapt" or m.quadratic:
        convert.quadratize(body, **quadratize_options(cfg.adapter))
    info["adapters"] = sum(1 for _ in convert.quadratic_adapters(body))
    if cfg.freeze_bn:
        from timm.layers import freeze_batch_norm_2d

        body = freeze_batch_norm_2d(body)
    extra = LastLevelMaxPool() if m.detector == "maskrcnn" else LastLevelP6P7(m.fpn_channels, m.fpn_channels)
    return TimmFPNBackbone(body, m.fpn_channels, extra), info


def _normalisation(body: nn.Module) -> tuple[list, list]:
    pc = getattr(body, "pretrained_cfg", None) or {}
    return list(pc.get("mean", (0.485, 0.456, 0.406))), list(pc.get("std", (0.229, 0.224, 0.225)))


def build_model(cfg: DetectionConfig, num_classes: int, weights: bool = True) -> tuple[nn.Module, dict]:
    """The run's detector for `num_classes` classes (background included) and what building it did.
    `weights=False`: the same structure without loading pretrained weights."""
    m, d = cfg.model, cfg.data
    backbone, info = build_backbone(cfg, weights)
    mean, std = _normalisation(backbone.body)
    # torchvision draws a training size from a tuple and evaluates at its last entry
    min_size = tuple(d.multiscale) if d.multiscale else d.min_size
    common = dict(min_size=min_size, max_size=d.max_size, image_mean=mean, image_std=std)
    levels = len(cfg.out_indices) + (1 if m.detector == "maskrcnn" else 2)
    if m.detector == "maskrcnn":
        names = [str(i) for i in range(len(cfg.out_indices))]
        anchors = AnchorGenerator(tuple((m.anchor_size * 2 ** i,) for i in range(levels)),
                                  ((0.5, 1.0, 2.0),) * levels)
        ch = m.fpn_channels
        model = MaskRCNN(
            backbone, num_classes=None, rpn_anchor_generator=anchors,
            rpn_pre_nms_top_n_train=m.rpn_proposals, rpn_post_nms_top_n_train=m.rpn_proposals,
            rpn_pre_nms_top_n_test=max(m.rpn_proposals // 2, 1), rpn_post_nms_top_n_test=max(m.rpn_proposals // 2, 1),
            box_roi_pool=MultiScaleRoIAlign(names, 7, 2),
            box_head=TwoMLPHead(ch * 7 * 7, m.box_head_dim),
            box_predictor=FastRCNNPredictor(m.box_head_dim, num_classes),
            box_batch_size_per_image=m.roi_batch, box_score_thresh=m.score_thresh,
            mask_roi_pool=MultiScaleRoIAlign(names, 14, 2),
            mask_head=MaskRCNNHeads(ch, list(m.mask_head_layers), 1),
            mask_predictor=MaskRCNNPredictor(m.mask_head_layers[-1], m.mask_head_layers[-1], num_classes),
            **common)
    elif m.detector == "fcos":
        strides = backbone.strides
        sizes = strides + [strides[-1] * 2 ** (i + 1) for i in range(levels - len(strides))]
        anchors = AnchorGenerator(tuple((s,) for s in sizes), ((1.0,),) * levels)  # FCOS: one point per stride
        model = FCOS(backbone, num_classes, anchor_generator=anchors, score_thresh=m.score_thresh, **common)
    else:
        anchors = AnchorGenerator(
            tuple(tuple(int(m.anchor_size * 2 ** i * 2 ** (j / 3)) for j in range(3)) for i in range(levels)),
            ((0.5, 1.0, 2.0),) * levels)
        model = RetinaNet(backbone, num_classes, anchor_generator=anchors, score_thresh=m.score_thresh, **common)
    info["num_classes"] = num_classes
    return model, info


def parameter_groups(model: nn.Module) -> dict:
    """Trainable groups (`config.TRAINABLE`) of a detector: ids of their parameters."""
    body = model.backbone.body
    quadratic = {id(p) for p in convert.quadratic_parameters(body)}
    in_body = {id(p) for p in body.parameters()}
    every = {id(p) for p in model.parameters()}
    return {"all": every, "quadratic": quadratic, "primary": in_body - quadratic, "head": every - in_body}


def set_trainable(model: nn.Module, groups: list) -> int:
    """Train exactly the union of `groups` of the detector; returns the number of trainable parameters."""
    return convert.train_only(model, groups, parameter_groups(model))
