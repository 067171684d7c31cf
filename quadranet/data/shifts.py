"""Pixel-wise distribution shifts for images with values in [0, 1], applied before normalisation.

Every shift is `f(x, s)` with strength `s` in [0, 1]; `s = 0` is the identity for all of them, and
all map [0, 1] into [0, 1]. The linear ones (`contrast`, `brightness`) are exactly affine in x
(no clipping), so a first-order first layer can absorb them; the nonlinear ones (`gamma`,
`solarize`, `invert_range`) are not affine for any s > 0.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict

import torch

Tensor = torch.Tensor


def contrast(x: Tensor, s: float) -> Tensor:
    """Linear contrast reduction towards mid-grey: x -> 0.5 + (1 - s) * (x - 0.5), computed as
    x + s * (0.5 - x) so that s = 0 returns x bit for bit.

    Exactly affine (slope 1 - s, no clipping needed: [0, 1] maps to [0.5 s, 1 - 0.5 s]).
    s = 1 gives the constant 0.5.
    """
    return x + s * (0.5 - x)


def brightness(x: Tensor, s: float) -> Tensor:
    """Linear brightening: x -> 0.5 s + (1 - 0.5 s) * x, computed as x + 0.5 s (1 - x) (s = 0 returns x
    bit for bit, white stays exactly 1).

    The clipping-free form of `clip(x + 0.5 s)`: adds 0.5 s at black and compresses the slope so
    white stays white ([0, 1] maps to [0.5 s, 1]); exactly affine in x.
    """
    return x + (0.5 * s) * (1.0 - x)


def gamma(x: Tensor, s: float) -> Tensor:
    """Gamma (power-law) darkening: x -> x ** (1 + 3 s); s = 1 gives x ** 4. Fixes 0 and 1."""
    return x.clamp_min(0.0) ** (1.0 + 3.0 * s)


def solarize(x: Tensor, s: float) -> Tensor:
    """Solarisation: pixels strictly above the threshold t = 1 - 0.5 s are inverted (x -> 1 - x).

    s = 0 gives t = 1, so nothing in [0, 1] is inverted; s = 1 inverts everything above 0.5.
    """
    t = 1.0 - 0.5 * s
    return torch.where(x > t, 1.0 - x, x)


def invert_range(x: Tensor, s: float) -> Tensor:
    """Mirror the mid-grey band [a, b] = [0.5 - 0.25 s, 0.5 + 0.25 s] onto itself: x -> a + b - x = 1 - x
    inside the band, x unchanged outside.

    s = 0 makes the band the single point 0.5 (identity); s = 1 inverts [0.25, 0.75], a
    discontinuous, non-monotone map of [0, 1] onto itself.
    """
    h = 0.25 * s
    inside = (x >= 0.5 - h) & (x <= 0.5 + h)
    return torch.where(inside, 1.0 - x, x) if s > 0 else x


SHIFTS: Dict[str, Callable[[Tensor, float], Tensor]] = {
    "contrast": contrast,
    "brightness": brightness,
    "gamma": gamma,
    "solarize": solarize,
    "invert_range": invert_range,
}
LINEAR_SHIFTS = ("contrast", "brightness")
NONLINEAR_SHIFTS = ("gamma", "solarize", "invert_range")


@dataclass(frozen=True)
class Shift:
    """A named shift at a fixed strength in [0, 1], callable on a tensor of images in [0, 1]."""

    name: str
    strength: float

    def __post_init__(self):
        if self.name not in SHIFTS:
            raise ValueError(f"unknown shift {self.name!r}; expected one of {sorted(SHIFTS)}")
        try:
            s = float(self.strength)
        except (TypeError, ValueError):
            s = float("nan")
        if isinstance(self.strength, bool) or not 0.0 <= s <= 1.0:
            raise ValueError(f"shift strength {self.strength!r} is outside [0, 1]")
        object.__setattr__(self, "strength", s)

    def __call__(self, x: Tensor) -> Tensor:
        return SHIFTS[self.name](x, self.strength)

    @property
    def linear(self) -> bool:
        return self.name in LINEAR_SHIFTS


def make_shift(name: str, strength: float) -> Shift:
    """The shift `name` (a key of SHIFTS) at `strength` in [0, 1]."""
    return Shift(name, strength)
