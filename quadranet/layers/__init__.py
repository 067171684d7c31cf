"""Quadratic building blocks: V1 neurons, the V2 adapter, and the (memory-efficient) quadratic product."""
from .adapter import QuadraticAdapter, atrous_padding, is_supported
from .product import KERNELS, ConvGeometry, QuadraticProductFn, quadratic_product
from .quadratic import QuadraticConv2d, QuadraticLinear

__all__ = [
    "KERNELS", "ConvGeometry", "QuadraticAdapter", "QuadraticConv2d", "QuadraticLinear",
    "QuadraticProductFn", "atrous_padding", "is_supported", "quadratic_product",
]
