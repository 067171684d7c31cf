"""`quadranet fixtures DIR`: the command line of `quadranet.data.fixtures` (tiny stand-ins of the paper-scale data
and weights, in their real layouts)."""
from __future__ import annotations

import argparse

from . import fixtures


def cmd_fixtures(args) -> None:
    """Write tiny ImageNet-1K / ImageNet-21K / COCO 2017 trees and ConvNeXt-T/S/B weights files (rehearsal data)."""
    fixtures.make_fixtures(args.dir, args.parts, seed=args.seed, image_size=args.image_size,
                           imagenet_train=args.imagenet_train, imagenet_val=args.imagenet_val,
                           imagenet21k_classes=args.imagenet21k_classes, imagenet21k_train=args.imagenet21k_train,
                           imagenet21k_val=args.imagenet21k_val, coco_train=args.coco_train, coco_val=args.coco_val,
                           force=args.force)


def add_parser(subparsers) -> None:
    """Register `fixtures` on the `quadranet` CLI's subparsers."""
    p = subparsers.add_parser("fixtures", help=cmd_fixtures.__doc__, description=fixtures.__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dir", help="folder to write into (workflow/config/rehearsal.yaml reads data/rehearsal)")
    p.add_argument("--parts", nargs="+", default=list(fixtures.PARTS), choices=fixtures.PARTS, help="default: all")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--image-size", type=int, default=40, help="shorter image side in px")
    p.add_argument("--imagenet-train", type=int, default=1, help="ImageNet-1K train images per class")
    p.add_argument("--imagenet-val", type=int, default=1, help="ImageNet-1K val images per class")
    p.add_argument("--imagenet21k-classes", type=int, default=8)
    p.add_argument("--imagenet21k-train", type=int, default=4, help="ImageNet-21K train images per class")
    p.add_argument("--imagenet21k-val", type=int, default=1, help="ImageNet-21K val images per class")
    p.add_argument("--coco-train", type=int, default=4, help="COCO train2017 images")
    p.add_argument("--coco-val", type=int, default=4, help="COCO val2017 images")
    p.add_argument("--force", action="store_true", help="rewrite parts already written with the same options")
    p.set_defaults(func=cmd_fixtures)
