"""`quadranet <command>`: the one entry point the workflow calls."""
from __future__ import annotations

import argparse
import importlib
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # no command may wait on a model hub


def cmd_train(args) -> None:
    """Train one run (scratch / adapt / finetune / lora) into --out; rerunning resumes or finds it complete."""
    from .config import load_config
    from .engine.train import train

    cfg = load_config(args.config, args.overrides)
    metrics = train(cfg, args.out, command=["quadranet", *sys.argv[1:]])
    print(f"{metrics['name']}: acc1 {metrics['acc1']:.2f}% (start {metrics['initial_acc1']}), "
          f"{metrics['device_seconds']['total']:.1f} device-s")


def cmd_eval(args) -> None:
    """Evaluate a finished run's model.safetensors, optionally on other data (e.g. data.shift=gamma)."""
    from .engine.evaluate import evaluate_run

    result = evaluate_run(args.run, args.overrides, out=args.out)
    print(" ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in result.items()
                   if not isinstance(v, dict)))


def cmd_shift_sweep(args) -> None:
    """Top-1 of a finished run's model on its eval data under each pixel-wise shift and strength (E3 calibration)."""
    import pandas as pd

    from . import io
    from .engine.evaluate import evaluate_run

    rows = []
    for shift in args.shifts:
        for strength in args.strengths:
            r = evaluate_run(args.run, (f"data.shift={shift}", f"data.shift_strength={strength}"))
            rows.append(dict(run=args.run, shift=shift, strength=strength, acc1=r["acc1"], eval_images=r["eval_images"],
                             git_commit=r["provenance"].get("git_commit"), date=r["provenance"].get("date")))
            print(f"{shift} {strength:g}: top-1 {r['acc1']:.2f}% on {r['eval_images']} images", flush=True)
    if args.out:
        io.write_text(args.out, pd.DataFrame(rows).to_csv(index=False))


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

    p = sub.add_parser("train", help=cmd_train.__doc__, description=cmd_train.__doc__)
    p.add_argument("--config", help="YAML run config (keys: quadranet/config.py); omitted: all defaults")
    p.add_argument("--out", required=True, help="run folder: config.yaml, log.jsonl, metrics.json, model.safetensors")
    p.add_argument("overrides", nargs="*", metavar="section.key=value", help="e.g. train.lr=3e-4 method=adapt")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("eval", help=cmd_eval.__doc__, description=cmd_eval.__doc__)
    p.add_argument("--run", required=True, help="folder of a finished `quadranet train` run")
    p.add_argument("--out", help="JSON file for the result (written atomically)")
    p.add_argument("overrides", nargs="*", metavar="data.key=value", help="data overrides, e.g. data.shift=gamma")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("shift-sweep", help=cmd_shift_sweep.__doc__, description=cmd_shift_sweep.__doc__)
    p.add_argument("--run", required=True, help="folder of a finished `quadranet train` run")
    p.add_argument("--shifts", nargs="+", required=True, help="contrast brightness gamma solarize invert_range")
    p.add_argument("--strengths", nargs="+", type=float, required=True, help="values in [0, 1]")
    p.add_argument("--out", help="CSV file for the results (written atomically)")
    p.set_defaults(func=cmd_shift_sweep)

    for module in ("quadranet.bench", "quadranet.detection.cli", "quadranet.report.cli"):
        try:  # each adds its own subcommands
            importlib.import_module(module).add_parser(sub)
        except ModuleNotFoundError as e:
            if not module.startswith(str(e.name)):
                raise
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except Exception as e:  # bad input and the library's own errors get one line; anything else a traceback
        if not (isinstance(e, (ValueError, FileNotFoundError, KeyError)) or type(e).__module__.startswith("quadranet")):
            raise
        print(f"quadranet {args.command}: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
