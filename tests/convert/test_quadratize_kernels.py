"""quadratize(kernel=...) on real timm models: every kernel computes the pretrained function exactly at init on
every layer type it converts (depthwise, TF-'SAME', dense and linear layers), then learns; the options reach the
layers from quadratize, timm names and run configs, with clear errors."""
import copy

import pytest
import timm
import torch
from torch import nn

import quadranet
from quadranet.classify.config import load_config
from quadranet.config import ConfigError
from quadranet.convert import conversion_report, load_first_order_state_dict, quadratic_adapters
from quadranet.models.build import quadratize_options

KERNELS = ["bilinear", "rbf", "rbf_in"]
# model, targets, input size: depthwise convs (ConvNeXt), TF-'SAME' depthwise convs (EfficientNet-Lite0's
# architecture), dense 3x3 convs (ResNet), linear layers (a ViT's and ConvNeXt's MLPs)
MODELS = {
    "test_convnext": (lambda: timm.create_model("test_convnext", num_classes=5), ["auto", "linear"], 32),
    "tf_efficientnet_lite0": (lambda: timm.create_model("tf_efficientnet_lite0", num_classes=5), ["auto"], 32),
    "resnet18": (lambda: timm.create_model("resnet18", num_classes=5), ["auto"], 32),
    "test_vit": (lambda: timm.create_model("test_vit", num_classes=5, img_size=32), ["linear"], 32),
}


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("name", sorted(MODELS))
def test_exact_at_init_then_learns(name, kernel):
    build, targets, size = MODELS[name]
    model = build().eval()
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        ref = model(x)
    trained = copy.deepcopy(model).train()
    primary = {n: p.detach().clone() for n, p in model.named_parameters()}
    quadranet.quadratize(model, rank=2, kernel=kernel, targets=targets)
    found = quadratic_adapters(model)
    assert found and all(a.kernel == kernel for _, a in found)
    with torch.no_grad():
        assert torch.equal(model(x), ref)  # eval: running statistics
        assert torch.equal(copy.deepcopy(model).train()(x), trained(x))  # train: batch statistics

    quadranet.mark_only_quadratic_trainable(model)
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(2):  # step 1 moves the zero projection P, step 2 the random factors
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), torch.tensor([1, 2])).backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        assert not torch.equal(model(x), ref)
    quadranet.unquadratize(model)
    for k, v in model.named_parameters():  # the first-order weights never moved (BN statistics do, in train mode)
        assert torch.equal(v, primary[k]), k


@pytest.mark.parametrize("kernel", ["rbf", "rbf_in"])
def test_report_and_first_order_weights_see_the_kernel_parts(kernel):
    model = quadranet.quadratize(timm.create_model("test_convnext", num_classes=5), rank=2, kernel=kernel, sigma=2.0)
    assert {a.sigma for _, a in quadratic_adapters(model)} == {2.0}
    added = sum(p.numel() for n, p in model.named_parameters() if ".quad_" in n)
    assert conversion_report(model, (3, 32, 32)).params_added == added  # BN and P_a, P_b counted
    first = timm.create_model("test_convnext", num_classes=5)
    load_first_order_state_dict(model, first.state_dict())  # BN buffers are not "missing"
    name, a = quadratic_adapters(model)[0]
    assert torch.equal(a.primary.weight, first.get_submodule(name).weight)


def test_timm_names_take_the_kernel():
    model = timm.create_model("quadranet_v2_convnext_atto", rank=2, kernel="rbf_in", sigma=0.5, num_classes=3)
    assert {(a.kernel, a.sigma) for _, a in quadratic_adapters(model)} == {("rbf_in", 0.5)}


def test_run_config_selects_the_kernel():
    cfg = load_config(None, base={"method": "adapt", "model": {"pretrained": "offline"},
                                  "adapter": {"kernel": "rbf", "sigma": 0.5}})
    assert quadratize_options(cfg.adapter)["kernel"] == "rbf" and quadratize_options(cfg.adapter)["sigma"] == 0.5
    with pytest.raises(ConfigError, match="adapter.kernel='gauss'.*rbf_in"):
        load_config(None, ["adapter.kernel=gauss"])
    with pytest.raises(ConfigError, match="adapter.sigma=0"):
        load_config(None, ["adapter.kernel=rbf", "adapter.sigma=0"])
