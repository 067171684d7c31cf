"""`quadranet export`: the command line of `quadranet.deploy` (a finished run's model to ONNX or torch.export)."""
from __future__ import annotations

import json


def cmd_export(args) -> None:
    """Export a finished run's model (first-order, adapted, LoRA merged, V1) to ONNX or a torch.export archive,
    BatchNorm folded, custom ops decomposed, metadata inside; --check compares it with eager PyTorch."""
    from .exporter import check_format, check_run, export_run, read_metadata

    check_format(args.format)
    path = export_run(args.run, args.out, args.format, batch=args.batch, dynamic_batch=args.dynamic_batch,
                      opset=args.opset, prune=args.prune, prune_images=args.prune_images)
    meta = read_metadata(path)
    print(f"wrote {path}: {meta['arch']} ({meta['method']}), input {meta['input_shape']}, "
          f"{meta['quadratic_layers']} quadratic layers, {meta['lora_merged']} LoRA layers merged, "
          f"{meta['batchnorm_folded']} BatchNorm folded")
    pruned = meta.get("prune")
    if pruned:
        print(f"pruned {len(pruned['pruned'])} of {pruned['quadratic_layers_before']} quadratic layers (share below "
              f"{pruned['threshold']:g} on {pruned['measured_on_train_images']} training images)")
    if args.check:
        result = check_run(args.run, path, limit=args.check)
        print(json.dumps(result))
        if pruned:  # the pruned model is meant to differ: report what it costs in top-1
            print(f"top-1 on {result['images']} evaluation images: eager {result['acc1_eager']:.2f}%, pruned and "
                  f"exported {result['acc1_exported']:.2f}% ({result['acc1_exported'] - result['acc1_eager']:+.2f} pp)")
        elif result["top1_agree"] < 1.0 or result["max_rel_error"] > 1e-4:
            raise ValueError(f"{path} differs from the eager model: {result}")


def add_parser(sub) -> None:
    """Register `export` on the `quadranet` CLI's subparsers."""
    p = sub.add_parser("export", help=cmd_export.__doc__.splitlines()[0], description=cmd_export.__doc__)
    p.add_argument("--run", required=True, help="folder of a finished `quadranet train` run")
    p.add_argument("--format", default="onnx", help="onnx (default) or torch-export")
    p.add_argument("--out", help="file to write (default: <run>/model.onnx or <run>/model.pt2)")
    p.add_argument("--batch", type=int, default=1, help="batch size of the exported graph (default 1)")
    p.add_argument("--dynamic-batch", action="store_true", help="any batch size (symbolic batch dimension)")
    p.add_argument("--opset", type=int, default=None, help="ONNX opset (default: the exporter's)")
    p.add_argument("--check", type=int, default=0, metavar="N",
                   help="then run the file on N of the run's evaluation images beside eager PyTorch (ONNX Runtime "
                        "for .onnx) and fail unless logits agree within 1e-4 (relative) and top-1 is identical")
    p.add_argument("--prune", type=float, default=None, metavar="SHARE",
                   help="drop the quadratic term of the layers whose share (RMS of the term / RMS of the primary "
                        "output) is below SHARE before exporting; --check then reports the top-1 it costs")
    p.add_argument("--prune-images", type=int, default=256, metavar="N",
                   help="training images the shares are measured on (default 256)")
    p.set_defaults(func=cmd_export)
