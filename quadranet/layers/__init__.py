"""Quadratic building blocks: V1 neurons, the V2 adapter, the (memory-efficient) quadratic product,
and the linear low-rank (LoRA) baseline."""
from .adapter import AdapterLayer, QuadraticAdapter, atrous_padding, is_supported
from .lora import LowRankAdapter
from .grouped import ConvGeometry
from .product import KERNELS, QuadraticProductFn, quadratic_product
from .quadratic import QuadraticConv2d, QuadraticLinear

__all__ = [
    "KERNELS", "AdapterLayer", "ConvGeometry", "LowRankAdapter", "QuadraticAdapter", "QuadraticConv2d", "QuadraticLinear",
    "QuadraticProductFn", "atrous_padding", "is_supported", "quadratic_product",
]
