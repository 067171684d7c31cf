"""Model families registered with timm: QuadraNet V1 (`quadranet_v1_<size>`) and V2 (`quadranet_v2_<backbone>`),
and the high-order peers they are compared with: HorNet (`hornet_<size>`), GFNet (`gfnet_<size>`) and timm's
FocalNet at the embedded sizes (`focalnet_<size>`)."""
from .focalnet import FOCALNET_CONFIGS, focalnet
from .gfnet import GFNET_CONFIGS, gfnet
from .hornet import HORNET_CONFIGS, hornet
from .quadranet_v1 import QUADRANET_V1_CONFIGS, quadranet_v1
from .quadranet_v2 import V2_BACKBONES, quadranet_v2

__all__ = ["FOCALNET_CONFIGS", "GFNET_CONFIGS", "HORNET_CONFIGS", "QUADRANET_V1_CONFIGS", "V2_BACKBONES", "focalnet",
           "gfnet", "hornet", "quadranet_v1", "quadranet_v2"]
