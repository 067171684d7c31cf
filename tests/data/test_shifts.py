"""Pixel-wise shifts: identity at s=0, [0, 1] -> [0, 1], linear ones exactly affine, nonlinear ones not."""
import pickle

import pytest
import torch

from quadranet.data.shifts import LINEAR_SHIFTS, NONLINEAR_SHIFTS, SHIFTS, Shift, make_shift

X = torch.linspace(0, 1, 1001, dtype=torch.float64)  # dense grid of [0, 1], 0.5 included
STRENGTHS = (0.05, 0.3, 0.5, 1.0)


def affine_residual(x: torch.Tensor, y: torch.Tensor) -> float:
    """Largest error of the least-squares fit y ~ a * x + b."""
    design = torch.stack([x, torch.ones_like(x)], dim=1)
    coef = torch.linalg.lstsq(design, y.unsqueeze(1)).solution
    return (design @ coef - y.unsqueeze(1)).abs().max().item()


def test_registry_partition():
    assert set(LINEAR_SHIFTS) | set(NONLINEAR_SHIFTS) == set(SHIFTS)
    assert not set(LINEAR_SHIFTS) & set(NONLINEAR_SHIFTS)


@pytest.mark.parametrize("name", sorted(SHIFTS))
def test_zero_strength_is_identity(name):
    assert torch.equal(make_shift(name, 0.0)(X), X)
    img = torch.rand(4, 1, 28, 28)
    assert torch.equal(make_shift(name, 0)(img), img)


@pytest.mark.parametrize("s", STRENGTHS)
@pytest.mark.parametrize("name", sorted(SHIFTS))
def test_range_and_shape_preserved(name, s):
    img = torch.rand(3, 1, 8, 8)
    for x in (X, img, img.float()):
        y = make_shift(name, s)(x)
        assert y.shape == x.shape and y.dtype == x.dtype
        assert y.min() >= 0 and y.max() <= 1


@pytest.mark.parametrize("s", STRENGTHS)
@pytest.mark.parametrize("name", LINEAR_SHIFTS)
def test_linear_shifts_are_exactly_affine(name, s):
    y = make_shift(name, s)(X)
    assert affine_residual(X, y) < 1e-12
    assert not torch.equal(y, X)  # and they do change the image


@pytest.mark.parametrize("s", STRENGTHS)
@pytest.mark.parametrize("name", NONLINEAR_SHIFTS)
def test_nonlinear_shifts_are_not_affine(name, s):
    assert affine_residual(X, make_shift(name, s)(X)) > 1e-3


def test_closed_forms():
    x = torch.tensor([0.0, 0.25, 0.5, 0.8, 1.0], dtype=torch.float64)
    close = lambda a, b: torch.testing.assert_close(a, torch.tensor(b, dtype=torch.float64))  # noqa: E731
    close(make_shift("contrast", 1.0)(x), [0.5] * 5)
    close(make_shift("contrast", 0.5)(x), [0.25, 0.375, 0.5, 0.65, 0.75])
    close(make_shift("brightness", 1.0)(x), [0.5, 0.625, 0.75, 0.9, 1.0])
    close(make_shift("gamma", 1.0)(x), [0.0, 0.25 ** 4, 0.5 ** 4, 0.8 ** 4, 1.0])
    close(make_shift("solarize", 1.0)(x), [0.0, 0.25, 0.5, 0.2, 0.0])  # inverted strictly above 0.5
    close(make_shift("invert_range", 1.0)(x), [0.0, 0.75, 0.5, 0.8, 1.0])  # [0.25, 0.75] mirrored


def test_shift_object():
    sh = make_shift("gamma", 1)
    assert sh == Shift("gamma", 1.0) and isinstance(sh.strength, float)
    assert not sh.linear and make_shift("contrast", 0.5).linear
    assert pickle.loads(pickle.dumps(sh)) == sh  # DataLoader workers pickle datasets holding a shift


@pytest.mark.parametrize("name", ["blur", "Contrast", ""])
def test_unknown_name(name):
    with pytest.raises(ValueError, match="unknown shift") as info:
        make_shift(name, 0.5)
    assert repr(name) in str(info.value)


@pytest.mark.parametrize("s", [-0.1, 1.01, float("nan"), float("inf"), "strong", None, True])
def test_strength_outside_unit_interval(s):
    with pytest.raises(ValueError, match=r"outside \[0, 1\]") as info:
        make_shift("contrast", s)
    assert repr(s) in str(info.value)
    with pytest.raises(ValueError):
        Shift("contrast", s)  # the dataclass validates too
