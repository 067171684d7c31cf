"""`quadranet train | eval | shift-sweep`: classification runs (scratch / adapt / finetune / lora)."""
from __future__ import annotations

import sys


def cmd_train(args) -> None:
    """Train one run (scratch / adapt / finetune / lora) into --out; rerunning resumes or finds it complete."""
    from .config import load_config
    from .train import train

    cfg = load_config(args.config, args.overrides)
    metrics = train(cfg, args.out, command=["quadranet", *sys.argv[1:]])
    print(f"{metrics['name']}: acc1 {metrics['acc1']:.2f}% (start {metrics['initial_acc1']}), "
          f"{metrics['device_seconds']['total']:.1f} device-s")


def cmd_eval(args) -> None:
    """Evaluate a finished run's model.safetensors, optionally on other data (e.g. data.shift=gamma)."""
    from .evaluate import evaluate_run

    result = evaluate_run(args.run, args.overrides, out=args.out)
    print(" ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in result.items()
                   if not isinstance(v, dict)))


def cmd_shift_sweep(args) -> None:
    """Top-1 of a finished run's model on its eval data under each pixel-wise shift and strength (E3 calibration)."""
    import pandas as pd

    from .. import atomic
    from .evaluate import evaluate_run

    rows = []
    for shift in args.shifts:
        for strength in args.strengths:
            r = evaluate_run(args.run, (f"data.shift={shift}", f"data.shift_strength={strength}"))
            rows.append(dict(run=args.run, shift=shift, strength=strength, acc1=r["acc1"], eval_images=r["eval_images"],
                             git_commit=r["provenance"].get("git_commit"), date=r["provenance"].get("date")))
            print(f"{shift} {strength:g}: top-1 {r['acc1']:.2f}% on {r['eval_images']} images", flush=True)
    if args.out:
        atomic.write_text(args.out, pd.DataFrame(rows).to_csv(index=False))


def add_parser(sub) -> None:
    """Register the classification subcommands on the `quadranet` CLI's subparsers."""
    p = sub.add_parser("train", help=cmd_train.__doc__, description=cmd_train.__doc__)
    p.add_argument("--config", help="YAML run config (keys: quadranet/classify/config.py); omitted: all defaults")
    p.add_argument("--out", required=True, help="run folder: config.yaml, log.jsonl, metrics.json, model.safetensors")
    p.add_argument("overrides", nargs="*", metavar="section.key=value", help="e.g. train.lr=3e-4 method=adapt")
    p.set_defaults(func=cmd_train)

    # `quadranet detect eval` takes the same three arguments (alike on purpose): each says which run
    # folder and which overrides it accepts, so they stay written out
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
