"""What every model family of our own owes timm's users (timm's own model tests, in small): each small size trains
(every parameter gets a finite, non-zero gradient), the same seed builds the same network, and pretrained weights,
which none of them has, are refused by name."""
import pytest
import timm
import torch

import quadranet  # noqa: F401  (registers the families)

SMALL = ["quadranet_v1_test", "hornet_test", "gfnet_test", "focalnet_test"]


@pytest.mark.parametrize("name", SMALL)
def test_every_parameter_gets_a_finite_gradient(name):
    model = timm.create_model(name, num_classes=5, drop_path_rate=0.1)
    model(torch.randn(2, 3, 32, 32)).logsumexp(1).sum().backward()
    bad = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()
           or not p.grad.any()]
    assert bad == []


@pytest.mark.parametrize("name", SMALL)
def test_same_seed_same_model_and_output(name):
    x = torch.randn(2, 3, 32, 32)
    outputs = []
    for _ in range(2):
        torch.manual_seed(1)
        outputs.append(timm.create_model(name, num_classes=5).eval()(x))
    assert torch.equal(outputs[0], outputs[1])


@pytest.mark.parametrize("name", SMALL)
def test_pretrained_weights_are_refused(name):
    with pytest.raises(ValueError, match=f"{name} has no pretrained weights: it is trained from scratch here"):
        timm.create_model(name, pretrained=True)
