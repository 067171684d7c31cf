"""timm's FocalNet at the embedded sizes (quadranet/models/focalnet.py) through timm.create_model."""
import pytest
import timm
import torch

import quadranet  # noqa: F401  (registers the families)
from quadranet.models import FOCALNET_CONFIGS


def test_every_small_size_is_registered():
    assert {f"focalnet_{s}" for s in FOCALNET_CONFIGS} <= set(timm.list_models("focalnet_*"))


@pytest.mark.parametrize("name,convnext,widths", [
    ("focalnet_atto", "convnext_atto", (40, 80, 160, 320)),
    ("focalnet_test", "test_convnext", (8, 16, 32, 64)),  # widths double: test_convnext's last width only
])
def test_small_sizes_have_their_convnexts_depths(name, convnext, widths):
    model, reference = timm.create_model(name), timm.create_model(convnext)
    assert tuple(len(layer.blocks) for layer in model.layers) == tuple(len(s.blocks) for s in reference.stages)
    assert tuple(model.embed_dim) == widths


def test_forward_and_backward_shapes():
    model = timm.create_model("focalnet_test", in_chans=1, num_classes=5)
    x = torch.randn(2, 1, 32, 32, requires_grad=True)
    features = model.forward_features(x)
    logits = model.forward_head(features)
    logits.sum().backward()
    assert features.shape == (2, 64, 1, 1)
    assert logits.shape == (2, 5)
    assert x.grad.shape == x.shape


def test_an_unknown_size_is_refused():
    with pytest.raises(ValueError, match="'huge' is unknown; expected one of"):
        quadranet.models.focalnet("huge")
