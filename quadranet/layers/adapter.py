"""The QuadraNet V2 neuron: a pretrained first-order layer plus a low-rank atrous quadratic term.

    y = primary(x) + P( k(A x, B x) )

`primary` is the original `nn.Conv2d` / `nn.Linear`, kept untouched (Xu et al., arXiv 2405.03192).
A and B produce `rank` factors per group of the primary layer: for a conv they are dilated ("atrous")
convolutions with their own kernel size and dilation and the primary's stride and groups, so one grouped
conv computes all factors in one launch; for a linear layer they are projections to `rank` features.
P projects the factors back to the primary's output channels and is zero-initialised, so at init the
layer computes exactly what the primary layer does, while A and B are random (as in LoRA, only one
factor may be zero or nothing learns).

Kernels k (the authors' `Kernel_Conv` in `miniHuiHui/InfiNet`, `InfiNet.py`; see `product.py`):
- `bilinear`: k = A x * B x, one product per factor, P weighs the rank products of each group;
- `rbf`: k = exp(-BN(sum_i (GELU(A_i x) - GELU(B_i x))^2 / (2 sigma^2))), the sum over the rank factors of each
  group inside the exponent and BatchNorm over the groups' channels, as theirs; P maps each group's one kernel
  channel to the group's outputs (a per-channel scale on a depthwise layer);
- `rbf_in`: the same with A on P_a x and B on P_b x, P_a, P_b dense 1x1 convs (linear maps) with bias.
Their models add the kernel with weight one and train from scratch; here it enters through P = 0, so the
converted model computes the pretrained function exactly at init for every kernel.
"""
from __future__ import annotations

from typing import Optional, Union

import torch
import torch.nn.functional as F
from timm.layers import Conv2dSame
from timm.layers.padding import pad_same
from torch import Tensor, nn

from .fused import depthwise_quadratic, depthwise_rbf_exponent, ops, rbf_tail
from .grouped import ConvGeometry, grouped_pointwise, one_tap
from .product import RBF_KERNELS, check_kernel, check_sigma, quadratic_product, rbf_term_exponent


def _pair(v) -> tuple:
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


def atrous_padding(primary: nn.Conv2d, kernel_size: tuple, dilation: tuple, name: str = "") -> Union[tuple, str]:
    """Padding of a (kernel_size, dilation) factor conv so its output grid equals the primary's at any input size.

    With the primary's stride s, both outputs have floor((H + 2p - d (k - 1) - 1) / s) + 1 rows, so
    the factor needs 2 p_q - d_q (k_q - 1) == 2 p - d (k - 1): p_q must be a whole number >= 0.
    """
    where = f" for layer {name!r}" if name else ""
    if isinstance(primary.padding, str):
        if primary.padding == "same" and all(d * (k - 1) % 2 == 0 for k, d in zip(kernel_size, dilation)):
            return "same"
        if primary.padding == "valid":
            pads = (0, 0)
        else:
            raise ValueError(
                f"kernel_size={kernel_size} with dilation={dilation}{where} cannot keep a padding='same' "
                f"layer's output size: dilation * (kernel_size - 1) must be even"
            )
    else:
        pads = primary.padding
    out = []
    for p, k, d, kq, dq in zip(pads, primary.kernel_size, primary.dilation, kernel_size, dilation):
        twice = 2 * p - d * (k - 1) + dq * (kq - 1)
        if twice % 2 or twice < 0:
            raise ValueError(
                f"kernel_size={kernel_size} with dilation={dilation}{where} does not fit the layer "
                f"(kernel {primary.kernel_size}, padding {primary.padding}, dilation {primary.dilation}): "
                f"the factor's output size would differ; expected dilation * (kernel_size - 1) of the same "
                f"parity as {d * (k - 1) - 2 * p} and at least {d * (k - 1) - 2 * p}"
            )
        out.append(twice // 2)
    return tuple(out)


class AdapterLayer(nn.Module):
    """A first-order `nn.Conv2d` / `nn.Linear` (the primary term, kept untouched) with a low-rank term beside it:
    y = primary(x) + term(x). The shared part of the quadratic adapter and LoRA, as peft's tuner layers share one
    base: argument checks, the geometry of the factor convs (their kernel size and dilation, the primary's stride
    and groups, padded so that the output grid is the primary's), the zero-initialised output projection, freezing
    the primary, switching the term off (`enabled`) and the forward pass."""

    term_name = "added"  # how errors name the term

    def __init__(self, primary: Union[nn.Conv2d, nn.Linear], rank: int, kernel_size: Optional[int],
                 dilation: Optional[int], freeze_primary: bool = False, name: str = ""):
        super().__init__()
        if isinstance(rank, bool) or not isinstance(rank, int) or rank <= 0:
            raise ValueError(f"rank={rank!r} must be a positive integer")
        if not is_supported(primary):
            raise TypeError(
                f"layer {name!r} is a {type(primary).__name__}; expected a torch.nn.Conv2d (zero padding, no "
                f"forward override, or timm's Conv2dSame) or torch.nn.Linear"
            )
        self.primary, self.rank = primary, rank
        self.enabled = True  # False bypasses the added term (see `quadranet.convert.quadratic_disabled`)
        self.kernel_size = self.dilation = None  # a conv's factor kernel size and dilation
        self.tf_same, self._padding = False, None
        if isinstance(primary, nn.Conv2d):
            ks = _pair(primary.kernel_size[0] if kernel_size is None else kernel_size)
            dil = _pair(primary.dilation[0] if dilation is None else dilation)
            if any(k < 1 for k in ks) or any(d < 1 for d in dil):
                raise ValueError(f"kernel_size={kernel_size!r} and dilation={dilation!r} must be >= 1")
            # timm's TF-'SAME' convs (EfficientNet-Lite weights from TF) pad at run time to ceil(H / s) rows;
            # the factors pad the same way for their own kernel, which gives the same grid.
            self.tf_same = isinstance(primary, Conv2dSame)
            self._padding = (0, 0) if self.tf_same else atrous_padding(primary, ks, dil, name)
            self.kernel_size, self.dilation = ks, dil
        if freeze_primary:
            primary.requires_grad_(False)

    def factor(self) -> Union[nn.Conv2d, nn.Linear]:
        """A factor of the term: `rank` outputs per group of the primary, from the primary's input."""
        p, dev, dtype = self.primary, self.primary.weight.device, self.primary.weight.dtype
        if isinstance(p, nn.Linear):
            return nn.Linear(p.in_features, self.rank, bias=False, device=dev, dtype=dtype)
        return nn.Conv2d(p.in_channels, p.groups * self.rank, self.kernel_size, p.stride, self._padding,
                         self.dilation, p.groups, bias=False, device=dev, dtype=dtype)

    def projection(self, width: Optional[int] = None) -> Union[nn.Conv2d, nn.Linear]:
        """The zero-initialised projection of `width` (default: rank) channels per group back to the primary's
        outputs (per group for a conv)."""
        p, dev, dtype = self.primary, self.primary.weight.device, self.primary.weight.dtype
        width = self.rank if width is None else width
        if isinstance(p, nn.Linear):
            out = nn.Linear(width, p.out_features, bias=False, device=dev, dtype=dtype)
        else:
            out = nn.Conv2d(p.groups * width, p.out_channels, 1, groups=p.groups, bias=False, device=dev,
                            dtype=dtype)
        nn.init.zeros_(out.weight)
        return out

    def term(self, x: Tensor) -> Tensor:
        """The added term alone."""
        raise NotImplementedError

    def _apply(self, fn, recurse=True):
        # `model.to(memory_format=torch.channels_last)` gives every 4-d weight channels-last strides. The term's
        # own weights, (C * rank, 1, k, k) and (C, rank, 1, 1), are laid out alike in both formats, and the term
        # copies them into whatever layout its kernels want, but autograd returns their gradients with standard
        # strides; DDP then warned "Grad strides do not match bucket view strides" and copied them every step.
        # So they keep standard strides (the primary keeps the format it is given).
        super()._apply(fn, recurse)
        for name, p in self.named_parameters():
            if not name.startswith("primary.") and p.dim() == 4:
                standard = torch.empty_like(p, memory_format=torch.contiguous_format)
                if standard.stride() != p.stride():
                    p.data = standard.copy_(p)
        return self

    def forward(self, x: Tensor) -> Tensor:
        y = self.primary(x)
        if not self.enabled:
            return y
        d = self.term(x)
        if d.shape != y.shape:  # guards geometry we could not check at conversion time
            raise RuntimeError(f"{self.term_name} term has shape {tuple(d.shape)} but the primary output "
                               f"{tuple(y.shape)}")
        return y + d


class QuadraticAdapter(AdapterLayer):
    """Wraps a first-order `nn.Conv2d` or `nn.Linear` (the primary term) and adds a rank-r quadratic term."""

    term_name = "quadratic"

    # same first arguments as LowRankAdapter's constructor (see there)
    def __init__(
        self,
        primary: Union[nn.Conv2d, nn.Linear],
        rank: int = 4,
        kernel_size: Optional[int] = 3,
        dilation: int = 2,
        kernel: str = "bilinear",
        memory_efficient: bool = False,
        freeze_primary: bool = False,
        name: str = "",
        sigma: float = 1.0,
    ):
        check_kernel(kernel)
        sigma = check_sigma(sigma)
        super().__init__(primary, rank, kernel_size, dilation, freeze_primary, name)
        self.kernel, self.memory_efficient, self.sigma = kernel, memory_efficient, sigma
        self.quad_a, self.quad_b = self.factor(), self.factor()
        if kernel in RBF_KERNELS:  # one kernel channel per group: the factors are summed in the exponent
            dev, dtype = primary.weight.device, primary.weight.dtype
            if isinstance(primary, nn.Linear):
                self.quad_norm = nn.BatchNorm1d(1, device=dev, dtype=dtype)
            else:
                self.quad_norm = nn.BatchNorm2d(primary.groups, device=dev, dtype=dtype)
            if kernel == "rbf_in":
                self.quad_in_a, self.quad_in_b = self._in_projection(), self._in_projection()
        self.quad_out = self.projection(1 if kernel in RBF_KERNELS else None)
        if isinstance(primary, nn.Conv2d) and primary.weight.device.type == "cpu":
            ops()  # build (once per machine) or load the fused CPU kernel now, not inside a timed training step

    def _in_projection(self) -> Union[nn.Conv2d, nn.Linear]:
        """rbf_in's P_a / P_b: a dense 1x1 conv (linear map) with bias on the primary's input, torch's default init."""
        p, dev, dtype = self.primary, self.primary.weight.device, self.primary.weight.dtype
        if isinstance(p, nn.Linear):
            return nn.Linear(p.in_features, p.in_features, device=dev, dtype=dtype)
        return nn.Conv2d(p.in_channels, p.in_channels, 1, device=dev, dtype=dtype)

    def _geometry(self) -> Optional[ConvGeometry]:
        a = self.quad_a
        return ConvGeometry(a.stride, a.padding, a.dilation, a.groups) if isinstance(a, nn.Conv2d) else None

    def _one_tap(self, x: Tensor):
        """`one_tap` of the factors where the term is depthwise (one input and one output channel per group)."""
        a, p = self.quad_a, self.quad_out
        if isinstance(a, nn.Conv2d) and a.groups == a.in_channels == p.out_channels:
            return one_tap(x, self.kernel_size, self._geometry())
        return None

    def quadratic(self, x: Tensor) -> Tensor:
        """The quadratic term alone, P(k(A x, B x))."""
        if self.kernel in RBF_KERNELS:
            return self._rbf(x)
        if self.tf_same:
            x = pad_same(x, self.kernel_size, self.quad_a.stride, self.dilation)
        if isinstance(self.quad_a, nn.Conv2d):  # a depthwise term on the CPU: one fused kernel (layers/fused.py)
            q = depthwise_quadratic(x, self.quad_a.weight, self.quad_b.weight, self.quad_out.weight, self._geometry())
            if q is not None:
                return q
        tap = self._one_tap(x)
        if tap is not None:  # per channel, P(A x * B x) = x^2 * sum_r P_r A_r B_r: one elementwise op
            xs, (i, j) = tap
            g = self.quad_out.groups
            scale = (self.quad_out.weight.view(g, -1) * self.quad_a.weight[:, 0, i, j].view(g, -1)
                     * self.quad_b.weight[:, 0, i, j].view(g, -1)).sum(1)
            return xs.square() * scale.view(1, g, 1, 1)
        q = quadratic_product(
            x, self.quad_a.weight, None, self.quad_b.weight, None, self._geometry(), self.memory_efficient,
        )
        if isinstance(self.quad_out, nn.Conv2d):
            return grouped_pointwise(q, self.quad_out.weight, self.quad_out.groups)
        return self.quad_out(q)

    def _rbf(self, x: Tensor) -> Tensor:
        """P exp(-BN(sum_i (GELU(A_i x_a) - GELU(B_i x_b))^2 / (2 sigma^2))), x_a = x_b = x, or (rbf_in) P_a x, P_b x."""
        x_a, x_b = x, None
        if self.kernel == "rbf_in":  # P_a and P_b as one layer with twice the outputs: one launch
            pa, pb = self.quad_in_a, self.quad_in_b
            w, b = torch.cat([pa.weight, pb.weight]), torch.cat([pa.bias, pb.bias])
            both = F.linear(x, w, b) if isinstance(pa, nn.Linear) else F.conv2d(x, w, b)
            x_a, x_b = both.chunk(2, dim=-1 if isinstance(pa, nn.Linear) else 1)
        if self.tf_same:  # the factors pad their (projected) inputs, as the primary pads x
            x_a = pad_same(x_a, self.kernel_size, self.quad_a.stride, self.dilation)
            x_b = None if x_b is None else pad_same(x_b, self.kernel_size, self.quad_a.stride, self.dilation)
        scale = 1.0 / (2.0 * self.sigma ** 2)
        e = None
        if isinstance(self.quad_a, nn.Conv2d):  # a depthwise term on the CPU: fused kernels (layers/fused.py)
            e = depthwise_rbf_exponent(x_a, x_b, self.quad_a.weight, self.quad_b.weight, scale, self._geometry())
            out = None if e is None else rbf_tail(e, self.quad_norm, self.quad_out.weight)
            if out is not None:
                return out
        if e is None:
            e = rbf_term_exponent(x_a, x_b, self.quad_a.weight, self.quad_b.weight, self._geometry(), scale,
                                  self.memory_efficient)
        if isinstance(self.quad_out, nn.Linear):  # BatchNorm over the one kernel feature of every position
            k = torch.exp(-self.quad_norm(e.reshape(-1, 1)).reshape(e.shape))
            return self.quad_out(k)
        k = torch.exp(-self.quad_norm(e))
        return grouped_pointwise(k, self.quad_out.weight, self.quad_out.groups)

    def term(self, x: Tensor) -> Tensor:
        return self.quadratic(x)

    def extra_repr(self) -> str:
        sigma = f", sigma={self.sigma}" if self.kernel in RBF_KERNELS else ""
        return (f"rank={self.rank}, kernel_size={self.kernel_size}, dilation={self.dilation}, "
                f"kernel={self.kernel!r}{sigma}, memory_efficient={self.memory_efficient}")


def is_supported(layer: nn.Module) -> bool:
    """True for `nn.Linear` and zero-padded `nn.Conv2d` whose forward is torch's own or timm's Conv2dSame."""
    if isinstance(layer, nn.Linear):
        return type(layer).forward is nn.Linear.forward
    if isinstance(layer, nn.Conv2d):
        return type(layer).forward in (nn.Conv2d.forward, Conv2dSame.forward) and layer.padding_mode == "zeros"
    return False
