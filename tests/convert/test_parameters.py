"""Parameter groups of an adapted network: first-order weights loaded under the adapters."""
import pytest
import timm
import torch

import quadranet


def test_load_first_order_state_dict():
    source = timm.create_model("resnet18")
    model = quadranet.quadratize(timm.create_model("resnet18"))
    quadranet.load_first_order_state_dict(model, source.state_dict())
    assert torch.equal(model.conv1.primary.weight, source.conv1.weight)
    bad = dict(source.state_dict())
    bad["layer1.0.conv1.weight"] = torch.zeros(64, 64, 5, 5)
    expected = r"'layer1\.0\.conv1\.primary\.weight' has shape \(64, 64, 5, 5\).*\(64, 64, 3, 3\)"
    with pytest.raises(ValueError, match=expected):
        quadranet.load_first_order_state_dict(model, bad)
