"""`quadranet plan`: the command line of `quadranet.experiments.plan` (projected device-hours, energy and CO2e of a
workflow config's runs, before anything runs)."""
from __future__ import annotations

import math
from pathlib import Path

from ..bench.results import read_bench
from . import plan


def cmd_plan(args) -> None:
    """Projected device-hours of a workflow config, per run, per experiment and in all, before anything runs."""
    import pandas as pd

    from .. import atomic
    from ..run.accounting import DEFAULT_CARBON_INTENSITY

    for flag, value in (("--power-w", args.power_w), ("--carbon-intensity", args.carbon_intensity)):
        if value is not None and not (value > 0 and math.isfinite(value)):
            raise ValueError(f"{flag}={value!r}: expected a positive number")
    _, sheet, registry = plan.load_registry(args.configfile, args.sheet)
    runs, detect_runs, manifest = registry.runs, registry.detect_runs, registry.manifest
    print(f"plan: {len(runs)} training runs" + (f", {len(detect_runs)} detection runs (not projected)"
                                                if detect_runs else "") + f" in {args.configfile}", flush=True)
    out = Path(args.out)
    if args.bench:
        bench = read_bench(args.bench)
    else:
        models, kernels = plan.probe_models(runs, manifest, sheet)
        bench = plan.probe(models, device=args.device, batch=args.probe_batch, steps=args.probe_steps,
                           kernels=kernels)
        atomic.write_text(out.with_name(out.stem + "_bench.csv"), bench.to_csv(index=False))
    devices = ", ".join(sorted(set(bench["device"].astype(str)))) if "device" in bench else "?"
    print(f"plan: throughput measured on {devices}" + (f" ({', '.join(args.bench)})" if args.bench else
                                                        " (probe)"), flush=True)
    df = plan.project(runs, manifest, bench, sheet, power_w=args.power_w, carbon_intensity=args.carbon_intensity)
    how = plan.energy_how(bench, args.power_w)
    df["energy_how"] = how
    table = plan.summary(df)
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(table.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    intensity = args.carbon_intensity if args.carbon_intensity is not None else DEFAULT_CARBON_INTENSITY
    print(f"energy: {how}; CO2e at {intensity:g} g/kWh")
    atomic.write_text(out, df.to_csv(index=False))
    atomic.write_text(out.with_name(out.stem + "_summary.csv"), table.to_csv(index=False))
    print(f"wrote {out} (per run) and {out.with_name(out.stem + '_summary.csv')} (per experiment, total)")
    if args.reference:
        report_reference(df, args.reference, out)


def report_reference(df, reference: str, out: Path) -> None:
    """Print the projection `df` against the device-seconds (and energy) the runs of folder `reference` measured;
    write <out stem>_vs_reference.csv."""
    from .. import atomic

    cmp = plan.compare_reference(df, reference)
    if cmp.empty:
        raise ValueError(f"{reference} holds none of this config's runs")
    total = cmp["projected_s"].sum() / cmp["measured_s"].sum() - 1
    per_exp = cmp.groupby("exp").apply(lambda g: g["projected_s"].sum() / g["measured_s"].sum() - 1,
                                       include_groups=False)
    print(f"against {reference}: {len(cmp)} of {len(df)} runs; projected {cmp['projected_s'].sum():.0f} "
          f"device-s, measured {cmp['measured_s'].sum():.0f}: error {total:+.1%} (per experiment: "
          + ", ".join(f"{e} {v:+.1%}" for e, v in per_exp.items())
          + f"; per run: median |error| {cmp['error'].abs().median():.1%}, max {cmp['error'].abs().max():.1%}); "
          f"images planned = seen in {int((cmp['images_planned'] == cmp['images_seen']).sum())} of {len(cmp)}")
    both = cmp.dropna(subset=["projected_kwh", "reference_kwh"])
    if len(both):  # energy of the reference runs counts start-up and the first evaluation too: an upper bound
        sources = sorted({str(v).split(" (")[0] for v in both["reference_energy_source"].dropna()})
        print(f"energy: projected {both['projected_kwh'].sum():.4g} kWh for {len(both)} runs whose metrics give "
              f"{both['reference_kwh'].sum():.4g} kWh ({'; '.join(sources)}; theirs include start-up and the "
              f"evaluation before training, which the projection leaves out)")
    atomic.write_text(out.with_name(out.stem + "_vs_reference.csv"), cmp.to_csv(index=False))


def add_parser(subparsers) -> None:
    """Register `plan` on the `quadranet` CLI's subparsers."""
    p = subparsers.add_parser("plan", help=cmd_plan.__doc__, description=plan.__doc__.split("\n\n")[0])
    p.add_argument("--configfile", default="workflow/config/default.yaml",
                   help="workflow config (default: workflow/config/default.yaml); its relative paths, as the "
                   "sheet's, are relative to the working directory, as for snakemake")
    p.add_argument("--sheet", default=None, help="backbone sheet (TSV) instead of the config's `sheet`")
    p.add_argument("--bench", nargs="+", metavar="CSV", help="`quadranet bench` CSVs (e.g. measured on your GPU); "
                   "without: a short probe on the present device")
    p.add_argument("--device", default="auto", help="probe device: auto (cuda if available), cpu, cuda:1, ...")
    p.add_argument("--probe-steps", type=int, default=3, help="timed steps per variant and mode of the probe")
    p.add_argument("--probe-batch", type=int, default=32, help="probe batch at 64 px; larger inputs get as many "
                   "images as have the same pixels (at least one)")
    p.add_argument("--power-w", type=float, default=None, metavar="W", help="project energy as device-hours x W "
                   "(e.g. your GPU's rated board power) instead of the bench's joules per image")
    p.add_argument("--carbon-intensity", type=float, default=None, metavar="G_PER_KWH",
                   help="grid carbon intensity for the CO2e projection (default: 475, as the training runs)")
    p.add_argument("--out", default="results/plan.csv", help="per-run CSV; <stem>_summary.csv beside it")
    p.add_argument("--reference", help="a reference folder (results/reference/<hardware>): compare the projection "
                   "with the device-seconds its runs measured")
    p.set_defaults(func=cmd_plan)
