"""`quadranet convert-report`: what `quadratize` adds to a timm backbone at several ranks (layers, parameters,
FLOPs). `quadranet report`, its old name, still works and says that it moved (the `quadranet.report` package is
the tables, figures and claims of the workflow)."""
from __future__ import annotations

import sys


def cmd_convert_report(args) -> None:
    """Conversion report of a timm backbone at several ranks: layers, parameters and FLOPs added."""
    import pandas as pd
    import timm

    from .. import atomic
    from . import conversion_report, quadratize

    if args.command == "report":
        print("quadranet report: this command is now `quadranet convert-report` (same options); `report` will go",
              file=sys.stderr)
    rows = []
    for rank in args.ranks:
        model = timm.create_model(args.model, num_classes=args.num_classes)
        quadratize(model, rank=rank, dilation=args.dilation, kernel_size=args.kernel_size, targets=args.targets or None)
        rep = conversion_report(model, (3, args.input_size, args.input_size))
        rows.append(dict(model=args.model, rank=rank, dilation=args.dilation, kernel_size=args.kernel_size,
                         input_size=args.input_size, layers=len(rep.layers), params_model=rep.params_model,
                         params_added=rep.params_added, params_overhead=rep.params_overhead,
                         flops_model=rep.flops_model, flops_added=rep.flops_added,
                         flops_overhead=rep.flops_overhead))
        print(f"{args.model} rank {rank}: {rep}")
    if args.out:
        atomic.write_text(args.out, pd.DataFrame(rows).to_csv(index=False))


def add_parser(sub) -> None:
    """Register `convert-report` (and its old name `report`, an alias that says it moved)."""
    for name, text in (("convert-report", cmd_convert_report.__doc__),
                       ("report", "old name of `convert-report` (moved; same options)")):
        p = sub.add_parser(name, help=text, description=text)
        p.add_argument("--model", required=True, help="timm model name, e.g. convnext_atto")
        p.add_argument("--ranks", type=int, nargs="+", default=[1, 4, 8])
        p.add_argument("--dilation", type=int, default=2)
        p.add_argument("--kernel-size", type=int, default=3)
        p.add_argument("--targets", nargs="*", default=None)
        p.add_argument("--input-size", type=int, default=224)
        p.add_argument("--num-classes", type=int, default=1000)
        p.add_argument("--out", help="CSV file to write (atomically)")
        p.set_defaults(func=cmd_convert_report)
