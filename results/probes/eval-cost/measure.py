"""Evaluation cost in the workflow's runs against the bench's inference time, per image, same threads, batch and
resolution: for each run, device-seconds of its evaluations after training began (metrics `device_seconds.eval`)
over the images they evaluated (the `eval` lines of log.jsonl, the evaluation before training left out), divided
by the bench's median inference step time per image of the model and variant that stand for the run's model: runs
from ImageNet weights are tf_efficientnet_lite0 (`quadranet.pretrained`: TF-style "same" padding, Conv2dSame),
the quadratic network from scratch is efficientnet_lite0 (static padding), which infers about 1.3x faster here.

    python measure.py RUNS_GLOB OUT_CSV BENCH_CSV [BENCH_CSV ...]
"""
import glob
import json
import sys
from pathlib import Path

import pandas as pd

PRETRAINED, SCRATCH = "tf_efficientnet_lite0", "efficientnet_lite0"
BENCH_ROW = {"adapt": (PRETRAINED, "adapted"), "scratch": (SCRATCH, "adapted"), "lora": (PRETRAINED, "lora"),
             "finetune": (PRETRAINED, "first_order"), "head": (PRETRAINED, "first_order")}


def main(pattern: str, out: str, *bench_csvs: str) -> None:
    bench = pd.concat([pd.read_csv(f) for f in bench_csvs])
    infer = bench[bench["mode"] == "infer"].set_index(["model", "variant"])
    per_image = infer["step_ms"] / infer["batch"]  # ms per image
    rows = []
    for f in sorted(glob.glob(pattern)):
        run = Path(f).parent
        metrics = json.loads((run / "metrics.json").read_text())
        evals = [e for e in map(json.loads, (run / "log.jsonl").read_text().splitlines())
                 if e["event"] == "eval" and e.get("tag") != "initial"]
        images = sum(e["eval_images"] for e in evals)
        method = run.parts[-3]  # the workflow's method (a head-only run's config says finetune)
        ms = 1000 * metrics["device_seconds"]["eval"] / images
        bench_ms = per_image[BENCH_ROW[method]]
        rows.append(dict(run=str(run), method=method, seed=metrics["seed"], evaluations=len(evals),
                         eval_images=images, eval_ms_per_image=round(ms, 3), bench_model=BENCH_ROW[method][0],
                         bench_variant=BENCH_ROW[method][1],
                         bench_ms_per_image=round(bench_ms, 3), ratio=round(ms / bench_ms, 3)))
    df = pd.DataFrame(rows)
    Path(out).write_text(df.to_csv(index=False))
    print(df.drop(columns="run").to_string(index=False))
    print(f"ratio: median {df['ratio'].median():.2f}, max {df['ratio'].max():.2f} over {len(df)} runs")


if __name__ == "__main__":
    main(*sys.argv[1:])
