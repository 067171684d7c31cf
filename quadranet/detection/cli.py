"""`quadranet detect train|eval|data`: detection runs on a quadratized backbone (COCO or the embedded set)."""
from __future__ import annotations

import sys


def cmd_train(args) -> None:
    """Train one detection run into --out; rerunning resumes from its last checkpoint or finds it complete."""
    from .config import load_config
    from .train import train

    cfg = load_config(args.config, tuple(args.overrides), preset=args.preset)
    m = train(cfg, args.out, command=["quadranet", *sys.argv[1:]])
    fmt = lambda v: "n/a" if v is None else f"{100 * v:.1f}"  # noqa: E731
    print(f"{m['name']}: box AP {fmt(m['box_ap'])} (AP50 {fmt(m['box_ap50'])}), mask AP {fmt(m['mask_ap'])}, "
          f"{m['device_seconds']['total']:.1f} device-s")


def cmd_eval(args) -> None:
    """COCO box / mask AP of a detection run's model (data.* overrides evaluate it on other data)."""
    from .evaluate import evaluate_run

    r = evaluate_run(args.run, tuple(args.overrides), out=args.out)
    print(" ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in r.items()
                   if not isinstance(v, (dict, list))))


def cmd_data(args) -> None:
    """Write the embedded Fashion-MNIST canvas detection set (COCO json + PNG) and print where it is."""
    import dataclasses

    from .config import load_config
    from .synthetic import CanvasSpec, build_canvas_coco

    cfg = load_config(None, tuple(args.overrides))
    folder = build_canvas_coco(CanvasSpec(**dataclasses.asdict(cfg.data.canvas)), args.root or cfg.data.root,
                               cfg.data.fashion_mnist_root)
    print(folder)


def add_parser(subparsers) -> None:
    """Register `detect` with its sub-commands on the top-level CLI's subparsers."""
    p = subparsers.add_parser("detect", help="COCO-style detection (Mask R-CNN / FCOS / RetinaNet) on a "
                                             "quadratized backbone", description=__doc__)
    sub = p.add_subparsers(dest="detect_command", required=True)

    t = sub.add_parser("train", help=cmd_train.__doc__, description=cmd_train.__doc__)
    t.add_argument("--config", help="YAML detection config (keys: quadranet/detection/config.py); omitted: defaults")
    t.add_argument("--preset", choices=["embedded", "coco_1x", "coco_3x"],
                   help="settings applied before --config and overrides (default: embedded)")
    t.add_argument("--out", required=True, help="run folder: config.yaml, log.jsonl, metrics.json, model.safetensors")
    t.add_argument("overrides", nargs="*", metavar="section.key=value",
                   help="e.g. method=adapt model.pretrained=offline model.detector=fcos data.root=/data/coco")
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("eval", help=cmd_eval.__doc__, description=cmd_eval.__doc__)  # as classify/cli.py's eval
    e.add_argument("--run", required=True, help="folder of a `quadranet detect train` run")
    e.add_argument("--out", help="JSON file for the result (written atomically)")
    e.add_argument("overrides", nargs="*", metavar="data.key=value", help="e.g. data.eval_limit=500")
    e.set_defaults(func=cmd_eval)

    d = sub.add_parser("data", help=cmd_data.__doc__, description=cmd_data.__doc__)
    d.add_argument("--root", help="where canvas sets are cached (default $QUADRANET_CACHE or ~/.cache/quadranet)")
    d.add_argument("overrides", nargs="*", metavar="data.canvas.key=value", help="e.g. data.canvas.train_size=1000")
    d.set_defaults(func=cmd_data)
