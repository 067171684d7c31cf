"""Model families registered with timm: QuadraNet V1 (`quadranet_v1_<size>`) and V2 (`quadranet_v2_<backbone>`)."""
from .quadranet_v1 import QUADRANET_V1_CONFIGS, quadranet_v1
from .quadranet_v2 import V2_BACKBONES, quadranet_v2

__all__ = ["QUADRANET_V1_CONFIGS", "V2_BACKBONES", "quadranet_v1", "quadranet_v2"]
