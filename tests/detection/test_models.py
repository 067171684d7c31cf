"""Detectors on a (quadratized) timm backbone: one training step each, and the adapt init is exact."""
import pytest
import timm
import torch
from torch import nn

from quadranet import convert
from quadranet.config import ConfigError
from quadranet.detection.config import default_trainable, load_config
from quadranet.detection.model import build_model, parameter_groups, set_trainable

SMALL = ["data.min_size=64", "data.max_size=64", "model.fpn_channels=16", "model.box_head_dim=32",
         "model.mask_head_layers=[16]", "model.rpn_proposals=50", "model.roi_batch=32"]
PRETRAINED = ["method=adapt", "model.pretrained=offline"]


def batch(n=2, size=64, masks=True):
    """Images with one bright square each, and its box / mask / label as a detection target."""
    g = torch.Generator().manual_seed(0)
    images, targets = [], []
    for i in range(n):
        x0, y0 = 8 + 8 * i, 12
        image = torch.rand(3, size, size, generator=g) * 0.1
        image[:, y0:y0 + 24, x0:x0 + 20] = 1.0
        m = torch.zeros(1, size, size, dtype=torch.uint8)
        m[0, y0:y0 + 24, x0:x0 + 20] = 1
        t = {"boxes": torch.tensor([[x0, y0, x0 + 20, y0 + 24]], dtype=torch.float32),
             "labels": torch.tensor([1 + i % 2]), "image_id": i}
        if masks:
            t["masks"] = m
        images.append(image)
        targets.append(t)
    return images, targets


@pytest.mark.parametrize("detector,method,losses", [
    ("maskrcnn", "scratch", {"loss_classifier", "loss_box_reg", "loss_mask", "loss_objectness", "loss_rpn_box_reg"}),
    ("maskrcnn", "adapt", {"loss_classifier", "loss_box_reg", "loss_mask", "loss_objectness", "loss_rpn_box_reg"}),
    ("fcos", "adapt", {"classification", "bbox_regression", "bbox_ctrness"}),
    ("retinanet", "finetune", {"classification", "bbox_regression"}),
])
def test_one_training_step_of_each_detector(detector, method, losses):
    over = SMALL + [f"model.detector={detector}", f"method={method}"] + (["model.fpn_channels=32"] if detector == "fcos" else [])
    over += [] if method == "scratch" else ["model.pretrained=offline"]
    cfg = load_config(overrides=over)
    model, info = build_model(cfg, num_classes=3)
    n = set_trainable(model, default_trainable(cfg))
    assert info["num_classes"] == 3 and info["adapters"] == (16 if method == "adapt" else 0)
    model.train()
    images, targets = batch(masks=cfg.masks)
    out = model(images, targets)
    assert set(out) == losses and all(torch.isfinite(v) for v in out.values())
    sum(out.values()).backward()
    trainable = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    assert sum(p.numel() for _, p in trainable) == n
    missing = [name for name, p in trainable if p.grad is None]
    assert not missing, missing[:5]
    if method == "adapt":  # the zero-initialised projection gets a gradient at once, the factors after it moves
        quad_out = [p for name, p in trainable if name.endswith("quad_out.weight")]
        assert quad_out and any(p.grad.abs().sum() > 0 for p in quad_out)
    model.eval()
    with torch.no_grad():
        det = model(images)
    assert len(det) == 2 and {"boxes", "labels", "scores"} <= set(det[0]) and ("masks" in det[0]) == cfg.masks


def test_adapt_backbone_computes_the_pretrained_features_at_init():
    adapt, _ = build_model(load_config(overrides=SMALL + PRETRAINED), 3)
    first, _ = build_model(load_config(overrides=SMALL + ["method=finetune", "model.pretrained=offline"]), 3)
    reference = timm.create_model("tf_efficientnet_lite0", features_only=True, out_indices=(1, 2, 3, 4)).eval()
    from quadranet.models.pretrained import pretrained

    sd = pretrained("efficientnet_lite0").state_dict()
    reference.load_state_dict({k: sd[k] for k in reference.state_dict()})
    x = torch.randn(2, 3, 64, 64)
    adapt.eval(), first.eval()
    with torch.no_grad():
        ref = reference(x)
        for a, b, r in zip(adapt.backbone.body(x), first.backbone.body(x), ref):
            assert torch.equal(a, b)  # quadratic terms are zero at init
            assert torch.allclose(b, r, rtol=1e-5, atol=1e-4)  # frozen BN computes what eval-mode BN does (to rounding)
    # the adapt detector trains its quadratic terms and the new FPN and heads; the pretrained primary stays
    groups = parameter_groups(adapt)
    n = set_trainable(adapt, ["quadratic", "head"])
    assert n == sum(p.numel() for p in convert.quadratic_parameters(adapt)) + sum(
        p.numel() for name, p in adapt.named_parameters() if not name.startswith("backbone.body."))
    assert all(not p.requires_grad for p in adapt.parameters() if id(p) in groups["primary"])


def test_pretrained_backbones_freeze_batchnorm_scratch_trains_it():
    from timm.layers import FrozenBatchNormAct2d

    scratch, _ = build_model(load_config(overrides=SMALL), 3)
    adapt, _ = build_model(load_config(overrides=SMALL + PRETRAINED), 3)
    assert any(isinstance(m, nn.BatchNorm2d) for m in scratch.backbone.body.modules())
    assert not any(isinstance(m, nn.BatchNorm2d) for m in adapt.backbone.body.modules())
    assert any(isinstance(m, FrozenBatchNormAct2d) for m in adapt.backbone.body.modules())


def test_weights_from_a_classification_run_folder(tmp_path):
    from safetensors.torch import save_file

    source = timm.create_model("tf_efficientnet_lite0", num_classes=10)  # a first-order run's whole model
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(tmp_path / "model.safetensors"))
    cfg = load_config(overrides=SMALL + ["method=adapt", f"model.pretrained={tmp_path}"])
    model, info = build_model(cfg, 3)
    assert info["unused_pretrained_entries"] == 8  # conv_head, bn2 (5), classifier (2)
    body = convert.unquadratize(model.backbone.body).state_dict()
    src = source.state_dict()
    assert torch.equal(body["conv_stem.weight"], src["conv_stem.weight"])
    assert torch.equal(body["blocks.3.1.conv_dw.weight"], src["blocks.3.1.conv_dw.weight"])

    one_channel = timm.create_model("tf_efficientnet_lite0", num_classes=10, in_chans=1)
    save_file({k: v.contiguous() for k, v in one_channel.state_dict().items()}, str(tmp_path / "one.safetensors"))
    with pytest.raises(ConfigError, match=r"conv_stem.weight.*shape \(32, 1, 3, 3\).*expects \(32, 3, 3, 3\)"):
        build_model(load_config(overrides=SMALL + ["method=finetune",
                                                                 f"model.pretrained={tmp_path / 'one.safetensors'}"]), 3)
    quad = convert.quadratize(timm.create_model("tf_efficientnet_lite0", num_classes=10), rank=4)
    save_file({k: v.contiguous() for k, v in quad.state_dict().items()}, str(tmp_path / "quad.safetensors"))
    quad_file = f"model.pretrained={tmp_path / 'quad.safetensors'}"
    with pytest.raises(ConfigError, match="already quadratized"):
        build_model(load_config(overrides=SMALL + ["method=adapt", quad_file]), 3)
    model, info = build_model(load_config(overrides=SMALL + ["method=finetune", quad_file]), 3)
    assert info["pretrained_quadratic"] and info["adapters"] == 16
    with pytest.raises(ConfigError, match="no such .safetensors file or run folder"):
        build_model(load_config(overrides=SMALL + ["method=finetune",
                                                                 f"model.pretrained={tmp_path / 'nowhere'}"]), 3)


def test_convnext_backbone_from_a_timm_checkpoint(tmp_path):
    """ConvNeXt has no stride-2 level: the default levels are its last four (strides 4-32), and a checkpoint of
    timm's key names (the paper's convnext_*.fb_in1k files) loads into its features model."""
    from safetensors.torch import save_file

    source = timm.create_model("test_convnext")
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(tmp_path / "m.safetensors"))
    cfg = load_config(overrides=SMALL + ["model.backbone=test_convnext", "method=adapt",
                                                   f"model.pretrained={tmp_path / 'm.safetensors'}"])
    model, info = build_model(cfg, 3)
    assert model.backbone.strides == [4, 8, 16, 32] and info["adapters"] > 0
    assert info["unused_pretrained_entries"] == 4  # head norm and fc
    out = model(*batch())
    assert all(torch.isfinite(v) for v in out.values())


def test_structure_only_build_loads_a_trained_state():
    cfg = load_config(overrides=SMALL + PRETRAINED)
    trained, _ = build_model(cfg, 3)
    bare, _ = build_model(cfg, 3, weights=False)
    bare.load_state_dict(trained.state_dict())  # same keys and shapes (frozen BN and adapters included)


def test_unknown_backbone_is_a_config_error():
    with pytest.raises(ConfigError, match="model.backbone='no_such_net' is not a timm model"):
        build_model(load_config(overrides=SMALL + ["model.backbone=no_such_net"]), 3)
    with pytest.raises(ConfigError, match="has weights for"):
        build_model(load_config(overrides=SMALL + ["model.backbone=resnet18"] + PRETRAINED), 3)
