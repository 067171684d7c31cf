"""`quadranet <command>`: the one entry point the workflow calls."""
from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # no command may wait on a model hub


def cmd_report(args) -> None:
    """Conversion report of a timm backbone at several ranks: layers, parameters and FLOPs added."""
    import pandas as pd
    import timm

    import quadranet
    from . import io

    rows = []
    for rank in args.ranks:
        model = timm.create_model(args.model, num_classes=args.num_classes)
        quadranet.quadratize(model, rank=rank, dilation=args.dilation, kernel_size=args.kernel_size,
                             targets=args.targets or None)
        rep = quadranet.conversion_report(model, (3, args.input_size, args.input_size))
        rows.append(dict(model=args.model, rank=rank, dilation=args.dilation, kernel_size=args.kernel_size,
                         input_size=args.input_size, layers=len(rep.layers), params_model=rep.params_model,
                         params_added=rep.params_added, params_overhead=rep.params_overhead,
                         flops_model=rep.flops_model, flops_added=rep.flops_added,
                         flops_overhead=rep.flops_overhead))
        print(f"{args.model} rank {rank}: {rep}")
    if args.out:
        io.write_text(args.out, pd.DataFrame(rows).to_csv(index=False))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="quadranet", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("report", help=cmd_report.__doc__)
    p.add_argument("--model", required=True, help="timm model name, e.g. convnext_atto")
    p.add_argument("--ranks", type=int, nargs="+", default=[1, 4, 8])
    p.add_argument("--dilation", type=int, default=2)
    p.add_argument("--kernel-size", type=int, default=3)
    p.add_argument("--targets", nargs="*", default=None)
    p.add_argument("--input-size", type=int, default=224)
    p.add_argument("--num-classes", type=int, default=1000)
    p.add_argument("--out", help="CSV file to write (atomically)")
    p.set_defaults(func=cmd_report)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (ValueError, FileNotFoundError, KeyError) as e:
        print(f"quadranet {args.command}: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
