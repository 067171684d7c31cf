"""`quadranet bench`: the command line of `quadranet.bench` (train-step and inference speed of a model's
variants or of one layer, `speed`; inference in deployment runtimes with --runtime, `runtimes`)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from .. import atomic
from ..run.device import resolve_device
from .runtimes import RUNTIME_VARIANTS, RUNTIMES
from .speed import (KERNEL_VARIANTS, LAYER_VARIANTS, MODES, PEER_VARIANTS, SHOWN, VARIANTS, __doc__ as BENCH_DOC, benchmark,
                    benchmark_layer, check_positive)


def cmd_bench(args) -> None:
    """Benchmark train step and inference of a model's variants (or of one layer with --layer)."""
    import pandas as pd

    from ..run import accounting

    if args.threads is not None:
        check_positive(threads=args.threads)
        torch.set_num_threads(args.threads)
    common = dict(modes=args.modes, batch=args.batch, input_size=args.input_size, steps=args.steps,
                  warmup=args.warmup, device=args.device, dtype=args.dtype, channels_last=args.channels_last,
                  compile=args.compile, rank=args.rank, dilation=args.dilation, kernel_size=args.kernel_size,
                  seed=args.seed)
    if args.runtime:  # deployment runtimes beside eager, inference only (runtimes.py)
        from .runtimes import benchmark_runtimes

        df = benchmark_runtimes(model=args.model, runtimes=args.runtime, variants=args.variants or RUNTIME_VARIANTS,
                                batch=args.batch, input_size=args.input_size, steps=args.steps, warmup=args.warmup,
                                device=args.device, channels_last=args.channels_last, num_classes=args.num_classes,
                                rank=args.rank, dilation=args.dilation, kernel_size=args.kernel_size,
                                targets=args.targets or None, lora_rank=args.lora_rank, seed=args.seed)
    elif args.layer:
        df = benchmark_layer(channels=args.channels, layer_kernel=args.layer_kernel,
                             variants=args.variants or LAYER_VARIANTS, **common)
    else:
        df = benchmark(model=args.model, variants=args.variants or VARIANTS, num_classes=args.num_classes,
                       targets=args.targets or None, v1_size=args.v1_size, lora_rank=args.lora_rank,
                       optimizer=args.opt, **common)
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(df[[c for c in SHOWN if c != "mode"] + ["runtime", "speedup_vs_eager"] if args.runtime else list(SHOWN)]
              .to_string(index=False, float_format=lambda v: f"{v:.3g}"))
    print("ratio_vs_first_order: median step time / first_order's, same mode, this process; flops_ratio: FLOPs "
          "per image / first_order's; peak_mem_mb: "
          "torch.cuda.max_memory_allocated (GPU only); saved_for_backward_mb: what autograd keeps for one train "
          "step's backward (parameters included)")
    if args.out:
        atomic.write_text(args.out, df.to_csv(index=False))
        dev = resolve_device(args.device)
        atomic.write_json(Path(args.out).with_suffix(".json"), accounting.provenance(
            config=vars(args) | {"func": None}, device_type=dev.type, command=["quadranet", *sys.argv[1:]]))
        print(f"wrote {args.out} (+ provenance {Path(args.out).with_suffix('.json')})")


def add_parser(subparsers) -> None:
    """Register `bench` on the `quadranet` CLI's subparsers."""
    p = subparsers.add_parser("bench", help=cmd_bench.__doc__, description=BENCH_DOC,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="convnext_atto", help="timm model name of the first-order base")
    p.add_argument("--variants", nargs="+", default=None, metavar="V",
                   help=f"of {', '.join(VARIANTS)} (default all), or the adapter's kernels "
                        f"{', '.join(KERNEL_VARIANTS)} and the high-order peers {', '.join(PEER_VARIANTS)} (by name); "
                        f"with --layer: {', '.join(LAYER_VARIANTS)}")
    p.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--input-size", type=int, default=64, help="image side (with --layer: feature map side)")
    p.add_argument("--steps", type=int, default=10, help="timed steps")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    p.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:1, ...")
    p.add_argument("--dtype", default="auto", choices=("auto", "float32", "bfloat16"),
                   help="bfloat16 = autocast; auto: bfloat16 on a GPU, float32 on the CPU")
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                   help="default: on, as training runs")
    p.add_argument("--compile", action="store_true", help="torch.compile each network")
    p.add_argument("--opt", default="sgd", choices=("sgd", "adamw"), help="optimizer of the train step")
    p.add_argument("--num-classes", type=int, default=1000)
    p.add_argument("--rank", type=int, default=4, help="quadratic rank of the adapted variants")
    p.add_argument("--dilation", type=int, default=2)
    p.add_argument("--kernel-size", type=int, default=3)
    p.add_argument("--targets", nargs="*", default=None, help="layers to adapt (see quadratize)")
    p.add_argument("--v1-size", default=None, help="size of the v1 variant and of the peers (quadranet_v1_<size>, hornet_<size>, ...; "
                                                       "default: from convnext_<size>)")
    p.add_argument("--lora-rank", type=int, default=None, help="default: matched to the quadratic parameter count")
    p.add_argument("--runtime", nargs="+", default=None, choices=RUNTIMES, metavar="R",
                   help=f"inference in deployment runtimes ({', '.join(RUNTIMES[1:])}) beside eager, of the exported "
                        f"variants {', '.join(RUNTIME_VARIANTS)} (rows gain the columns runtime, speedup_vs_eager)")
    p.add_argument("--layer", action="store_true", help="benchmark one depthwise layer instead of a model")
    p.add_argument("--channels", type=int, default=96, help="--layer: channels")
    p.add_argument("--layer-kernel", type=int, default=7, help="--layer: kernel size of the depthwise conv")
    p.add_argument("--threads", type=int, default=None, help="CPU intra-op threads (torch.set_num_threads)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="CSV file (written atomically) + provenance JSON beside it")
    p.set_defaults(func=cmd_bench)
