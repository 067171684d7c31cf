"""QuadraNet V1 quadratic neurons: y = f_a(x) * f_b(x) + f_c(x) (Xu et al., arXiv 2311.17956).

Each f is a full first-order layer with its own weights and bias; the high-order architecture that the
suite trains from scratch is built from these.
"""
from __future__ import annotations

from torch import Tensor, nn

from .product import ConvGeometry, check_kernel, quadratic_product

V1_KERNELS = ("bilinear",)  # the authors' V1 (miniHuiHui/QuadraNet, QuadraNet.py) has the product alone


class QuadraticConv2d(nn.Module):
    """f_a(x) * f_b(x) + f_c(x) with three convolutions of identical geometry (depthwise included)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size=3,
        stride=1,
        padding=0,
        dilation=1,
        groups: int = 1,
        bias: bool = True,
        kernel: str = "bilinear",
        memory_efficient: bool = False,
    ):
        super().__init__()
        check_kernel(kernel, V1_KERNELS, " by the V1 neuron (the adapter, QuadraticAdapter, has rbf and rbf_in)")

        def conv():
            return nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias)

        self.conv_a, self.conv_b, self.conv_c = conv(), conv(), conv()
        self.kernel, self.memory_efficient = kernel, memory_efficient

    def forward(self, x: Tensor) -> Tensor:
        a = self.conv_a
        geom = ConvGeometry(a.stride, a.padding, a.dilation, a.groups)
        q = quadratic_product(
            x, a.weight, a.bias, self.conv_b.weight, self.conv_b.bias, geom, self.memory_efficient
        )
        return q + self.conv_c(x)

    def extra_repr(self) -> str:
        return f"kernel={self.kernel!r}, memory_efficient={self.memory_efficient}"


class QuadraticLinear(nn.Module):
    """f_a(x) * f_b(x) + f_c(x) with three linear maps."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        kernel: str = "bilinear",
        memory_efficient: bool = False,
    ):
        super().__init__()
        check_kernel(kernel, V1_KERNELS, " by the V1 neuron (the adapter, QuadraticAdapter, has rbf and rbf_in)")
        self.fc_a = nn.Linear(in_features, out_features, bias)
        self.fc_b = nn.Linear(in_features, out_features, bias)
        self.fc_c = nn.Linear(in_features, out_features, bias)
        self.kernel, self.memory_efficient = kernel, memory_efficient

    def forward(self, x: Tensor) -> Tensor:
        q = quadratic_product(
            x, self.fc_a.weight, self.fc_a.bias, self.fc_b.weight, self.fc_b.bias, None, self.memory_efficient,
        )
        return q + self.fc_c(x)

    def extra_repr(self) -> str:
        return f"kernel={self.kernel!r}, memory_efficient={self.memory_efficient}"

