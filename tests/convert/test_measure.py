"""What the added terms do and cost: the model with them switched off, the conversion report's counts, and the
quadratic share."""
import pytest
import timm
import torch
from torch import nn

import quadranet
from quadranet.convert import init_quadratic_for_scratch, quadratic_share


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


def test_quadratic_share_is_zero_at_init_and_counts_every_kind_of_term():
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
