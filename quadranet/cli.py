"""`quadranet <command>`: the one entry point the workflow calls.

One convention for every subcommand: it lives beside its library code, in a module whose
`add_parser(subparsers)` registers it (a `help` and a `description` each, `set_defaults(func=...)`), and that
module is imported plainly and listed in COMMAND_MODULES below. A new command module is one import and one entry
there; `quadranet <command> --help` then works by itself.
"""
from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # no command may wait on a model hub

from .data import cli as data_cli  # noqa: E402
from .experiments import cli as experiments_cli  # noqa: E402
from .bench import cli as bench_cli  # noqa: E402
from .convert import cli as convert_cli  # noqa: E402
from .deploy import cli as deploy_cli  # noqa: E402
from .classify import cli as classify_cli  # noqa: E402
from .detection import cli as detection_cli  # noqa: E402
from .report import cli as report_cli  # noqa: E402

# train, eval, shift-sweep | detect | collect, tables, figures, claims, reproduce | bench | convert-report | plan |
# fixtures | export
COMMAND_MODULES = (classify_cli, detection_cli, report_cli, bench_cli, convert_cli, experiments_cli, data_cli,
                   deploy_cli)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="quadranet", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for module in COMMAND_MODULES:
        module.add_parser(sub)
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
