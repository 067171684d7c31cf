"""quadratize / unquadratize on real timm and torchvision models (peft-style table-driven checks)."""
import pytest
import timm
import torch
import torchvision
from torch import nn

import quadranet
from quadranet.convert import adapters, select_layers

MODELS = {
    "timm/convnext_atto": lambda: timm.create_model("convnext_atto", num_classes=10),
    "timm/resnet18": lambda: timm.create_model("resnet18", num_classes=10),
    "timm/efficientnet_lite0": lambda: timm.create_model("efficientnet_lite0", num_classes=10),
    "torchvision/resnet18": lambda: torchvision.models.resnet18(num_classes=10),
}
# Layers the default targets must choose: depthwise where the network has them, else every spatial conv.
EXPECTED_LAYERS = {"timm/convnext_atto": 12, "timm/resnet18": 17, "timm/efficientnet_lite0": 16,
                   "torchvision/resnet18": 17}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_exact_at_init_then_differs_after_one_quadratic_step(name):
    model = MODELS[name]().eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ref = model(x)
    primary = {k: v.clone() for k, v in model.state_dict().items()}
    quadranet.quadratize(model, rank=4)
    assert len(list(adapters(model))) == EXPECTED_LAYERS[name]
    with torch.no_grad():
        out = model(x)
    assert (out - ref).abs().max().item() <= 1e-5

    quadranet.mark_only_quadratic_trainable(model)
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert trainable and all(any(p is q for q in quadranet.quadratic_parameters(model)) for p in trainable)
    opt = torch.optim.AdamW(trainable, lr=1e-2)
    for _ in range(2):  # step 1 moves the zero factor P, step 2 the random factors A, B
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), torch.tensor([1, 2])).backward()
        opt.step()
    with torch.no_grad():
        after = model(x)
    # random-init ConvNeXt scales each block by layer-scale 1e-6, so the logits move little; any move counts
    assert (after - ref).abs().max().item() > 0
    assert any(a.quad_out.weight.abs().sum() > 0 for _, a in adapters(model))
    quadranet.unquadratize(model)  # the primary weights were never touched
    for k, v in model.state_dict().items():
        assert torch.equal(v, primary[k]), k


def test_default_targets_are_depthwise_for_convnext_and_all_spatial_for_resnet():
    convnext = timm.create_model("convnext_atto")
    assert all(n.endswith("conv_dw") for n in select_layers(convnext))
    resnet = timm.create_model("resnet18")
    names = select_layers(resnet)
    assert "conv1" in names and not any("downsample" in n for n in names)  # 1x1 shortcuts stay linear


def test_targets_by_type_and_pattern():
    model = timm.create_model("convnext_atto")
    chosen = select_layers(model, ["depthwise", "stages.3.*"])
    assert chosen == ["stages.3.blocks.0.conv_dw", "stages.3.blocks.1.conv_dw"]
    assert select_layers(model, "linear") == ["head.fc"]
    assert "stem.0" in select_layers(model, "spatial")


def test_pattern_matching_nothing_is_an_error():
    with pytest.raises(ValueError, match=r"target pattern 'stages\.9\.\*' matches no"):
        quadranet.quadratize(timm.create_model("convnext_atto"), targets="stages.9.*")


def test_quadratize_twice_is_an_error():
    model = quadranet.quadratize(timm.create_model("resnet18"))
    with pytest.raises(ValueError, match="already quadratized"):
        quadranet.quadratize(model)


def test_unquadratize_restores_the_first_order_model():
    model = timm.create_model("resnet18")
    keys = list(model.state_dict())
    quadranet.unquadratize(quadranet.quadratize(model, targets="spatial"))
    assert list(model.state_dict()) == keys
    assert not list(adapters(model))


def test_quadratic_disabled_gives_the_primary_function():
    model = quadranet.quadratize(timm.create_model("convnext_atto").eval())
    for p in quadranet.quadratic_parameters(model):
        nn.init.normal_(p)
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        quad = model(x)
        with quadranet.quadratic_disabled(model):
            plain = model(x)
        assert not torch.allclose(quad, plain)
        assert torch.equal(model(x), quad)


@pytest.mark.parametrize("rank", [1, 4, 8])
def test_conversion_report_counts(rank):
    model = quadranet.quadratize(timm.create_model("convnext_atto"), rank=rank)
    report = quadranet.conversion_report(model, input_size=(3, 64, 64))
    added = sum(p.numel() for p in quadranet.quadratic_parameters(model))
    assert report.params_added == added and len(report.layers) == 12
    # first stage: 40 channels, 3x3 factors: 2 * (40*rank*9) weights + 40*rank in the output projection
    assert report.layers[0].params_added == 2 * 40 * rank * 9 + 40 * rank
    # its FLOPs at 64x64 (16x16 grid after the stem): 2 per multiply-add
    assert report.layers[0].flops_added == 2 * 16 * 16 * (2 * 40 * rank * 9 + 40 * rank)
    assert report.flops_added == sum(r.flops_added for r in report.layers) > 0


def test_load_first_order_state_dict():
    source = timm.create_model("resnet18")
    model = quadranet.quadratize(timm.create_model("resnet18"))
    quadranet.load_first_order_state_dict(model, source.state_dict())
    assert torch.equal(model.conv1.primary.weight, source.conv1.weight)
    bad = dict(source.state_dict())
    bad["layer1.0.conv1.weight"] = torch.zeros(64, 64, 5, 5)
    with pytest.raises(ValueError, match=r"'layer1\.0\.conv1\.primary\.weight' has shape \(64, 64, 5, 5\).*\(64, 64, 3, 3\)"):
        quadranet.load_first_order_state_dict(model, bad)


def test_quadratic_share_is_zero_at_init_and_counts_every_kind_of_term():
    from quadranet.convert import init_quadratic_for_scratch, quadratic_share

    x = [torch.randn(4, 3, 32, 32)]
    model = timm.create_model("test_convnext", num_classes=5)
    assert quadratic_share(model, x) is None  # nothing added
    quadranet.quadratize(model, rank=2)
    assert quadratic_share(model, x) == {"median": 0.0, "max": 0.0, "layers": 9}  # P = 0: exact at init
    init_quadratic_for_scratch(model)
    share = quadratic_share(model, x)
    assert 0 < share["median"] <= share["max"] and model.training  # measured in eval mode, mode restored
    v1 = timm.create_model("quadranet_v1_test", num_classes=5)
    assert quadratic_share(v1, x)["layers"] == 9 and quadratic_share(v1, x)["median"] > 0
