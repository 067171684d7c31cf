"""`quadranet collect | tables | figures | claims`: the reporting steps of the workflow, each usable alone.

    quadranet collect --manifest results/manifest.tsv [--bench CSV...] [--reference results/reference] --out-dir results/collected
    quadranet tables  --collected results/collected --out-dir results/tables [--tolerance-pp 1.0]
    quadranet figures --collected results/collected --out-dir figures [--arch convnext_atto]
    quadranet claims  --collected results/collected --paper workflow/paper_numbers.yaml --scale default
                      [--competitive-pp 1.0] [--tolerance-pp 1.0] [--band 30 65] --out results/claims.md
    quadranet reproduce --collected results/collected --reference cpu-2core-amd-epyc-default [--out CSV]
"""
from __future__ import annotations

from . import BAND, TOLERANCE_PP


def cmd_collect(args) -> None:
    """Read the runs of a manifest (and reference runs) into results/collected/{runs,curves,bench}.csv."""
    from .collect import collect, write_collected

    runs, curves, bench = collect(args.manifest, args.bench, args.reference)
    write_collected(args.out_dir, runs, curves, bench)
    done = int((runs["status"] == "done").sum()) if len(runs) else 0
    print(f"collected {done}/{len(runs)} finished run roles, {len(curves)} log lines, {len(bench)} bench rows "
          f"-> {args.out_dir}")


def cmd_tables(args) -> None:
    """Write tables 1-5 (CSV, Markdown, LaTeX) from collected runs."""
    from .collect import load_collected
    from .tables import write_tables

    print("wrote", ", ".join(write_tables(*load_collected(args.collected), args.out_dir, args.tolerance_pp)))


def cmd_figures(args) -> None:
    """Draw figures 1-7 (PNG, PDF) from collected runs."""
    from .collect import load_collected
    from .figures import write_figures

    print("wrote", ", ".join(write_figures(*load_collected(args.collected), args.out_dir, arch=args.arch)))


def cmd_claims(args) -> None:
    """Write the claims report (paper value, ours, scale, verdict for C1-C9 and the suite's own A1-A2)."""
    from .claims import evaluate_claims, write_claims
    from .collect import load_collected

    claims = evaluate_claims(*load_collected(args.collected), args.paper, args.scale, args.competitive_pp,
                             args.tolerance_pp, tuple(args.band))
    write_claims(claims, args.out)
    for r in claims.itertuples():
        print(f"{r.claim}: {r.verdict}")


def cmd_reproduce(args) -> None:
    """Check this machine's E1 top-1 against a committed reference (within its 95% intervals over seeds)."""
    from .. import atomic
    from .collect import load_collected
    from .reproduce import RULE, compare
    from .tables import to_markdown

    table = compare(load_collected(args.collected)[0], args.reference)
    if table.empty:
        raise ValueError(f"no E1 row of this machine's runs is also in reference {args.reference!r}")
    print(to_markdown(table.round(2)), f"\n{RULE}", sep="\n")
    if args.out:
        atomic.write_text(args.out, table.to_csv(index=False))
    outside = table[table["reproduced"] == False]  # noqa: E712 (None: no interval, not judged)
    if len(outside):
        raise ValueError(f"{len(outside)} of {len(table)} rows fall outside the reference's intervals: "
                         + ", ".join("/".join(map(str, r[:3])) for r in outside.itertuples(index=False)))


def add_parser(sub) -> None:
    """Register the reporting subcommands on the `quadranet` CLI's subparsers."""
    p = sub.add_parser("collect", help=cmd_collect.__doc__, description=cmd_collect.__doc__)
    p.add_argument("--manifest", required=True, help="manifest.tsv beside a runs/ folder (written by the workflow)")
    p.add_argument("--bench", nargs="*", default=[], help="CSV files of `quadranet bench` on this machine")
    p.add_argument("--reference", help="folder of <hardware>/ subfolders with manifest.tsv, runs/ and bench/")
    p.add_argument("--out-dir", required=True)
    p.set_defaults(func=cmd_collect)
    doc = cmd_reproduce.__doc__.replace("%", "%%")  # argparse formats help strings with %
    p = sub.add_parser("reproduce", help=doc, description=doc)
    p.add_argument("--collected", required=True, help="folder written by `quadranet collect` (with --reference)")
    p.add_argument("--reference", required=True, help="name of a results/reference/<hardware>/ folder")
    p.add_argument("--out", help="CSV file for the comparison (written atomically)")
    p.set_defaults(func=cmd_reproduce)
    for name, func in (("tables", cmd_tables), ("figures", cmd_figures), ("claims", cmd_claims)):
        p = sub.add_parser(name, help=func.__doc__, description=func.__doc__)
        p.add_argument("--collected", required=True, help="folder written by `quadranet collect`")
        if name in ("tables", "claims"):
            p.add_argument("--tolerance-pp", type=float, default=TOLERANCE_PP,
                           help="the savings target is the scratch runs' mean final top-1 minus this (pp)")
        if name == "claims":
            p.add_argument("--band", type=float, nargs=2, default=list(BAND), metavar=("LOW", "HIGH"),
                           help="E3 (C5): keep shifts whose mean zero-shot top-1 (%%) lies in [LOW, HIGH]")
            p.add_argument("--paper", required=True, help="paper numbers file (workflow/paper_numbers.yaml)")
            p.add_argument("--scale", required=True, help="label of the workflow scale (default, gpu, paper, ...)")
            p.add_argument("--competitive-pp", type=float, default=1.0,
                           help="largest top-1 drop (percentage points) still 'competitive' (C2-C4)")
            p.add_argument("--out", required=True, help="Markdown file; a CSV is written beside it")
        else:
            p.add_argument("--out-dir", required=True)
        if name == "figures":
            p.add_argument("--arch", default="convnext_atto", help="first-order timm backbone drawn in figure 4")
        p.set_defaults(func=func)
