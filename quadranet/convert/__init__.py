"""Convert a first-order network into a QuadraNet V2 one, report what changed, and convert back.

`inject`: choose layers and wrap them in quadratic (or LoRA) adapters, in place, and unwrap them;
`parameters`: the parameter groups of an adapted network (added, quadratic, LoRA; what trains; first-order
weights under the adapters; the matched LoRA rank); `measure`: what the added terms do and cost (their share of
each layer's output, FLOPs, the conversion report).
"""
from .inject import (LAYER_TYPES, find_adapters, lora_adapt, lora_adapters, merge_lora, quadratic_adapters,
                     quadratize, replace_layer, select_layers, unlora, unquadratize)
from .measure import (ConversionReport, ConvertedLayer, conversion_report, count_flops, layer_shares, model_flops,
                      quadratic_disabled, quadratic_share)
from .parameters import (MatchedRank, added_parameters, init_quadratic_for_scratch, load_first_order_state_dict,
                         lora_parameters, mark_only_quadratic_trainable, matched_lora_rank, quadratic_parameters,
                         train_only)

__all__ = [
    "LAYER_TYPES", "ConversionReport", "ConvertedLayer", "MatchedRank", "added_parameters", "conversion_report",
    "count_flops", "find_adapters", "init_quadratic_for_scratch", "layer_shares", "load_first_order_state_dict",
    "lora_adapt", "lora_adapters", "lora_parameters", "mark_only_quadratic_trainable", "matched_lora_rank",
    "merge_lora", "model_flops", "quadratic_adapters", "quadratic_disabled", "quadratic_parameters",
    "quadratic_share", "quadratize", "replace_layer", "select_layers", "train_only", "unlora", "unquadratize",
]
