"""quadratize / unquadratize and the layers they choose, on real timm and torchvision models (peft-style
table-driven checks)."""
import pytest
import timm
import torch
import torchvision
from torch import nn

import quadranet
from quadranet.convert import lora_adapters, quadratic_adapters, select_layers

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
    assert len(list(quadratic_adapters(model))) == EXPECTED_LAYERS[name]
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
    assert any(a.quad_out.weight.abs().sum() > 0 for _, a in quadratic_adapters(model))
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
    assert not list(quadratic_adapters(model))


def test_quadratic_adapters_leaves_out_lora_adapters():
    model = quadranet.lora_adapt(timm.create_model("test_convnext", num_classes=5), rank=2)
    assert quadratic_adapters(model) == [] and len(lora_adapters(model)) == 9
