"""Pruning for deployment, measured: for each finished adapted run and share threshold, `quadranet export --prune`
(ONNX, batch 100) and its `--check` over the run's evaluation images (top-1 of the pruned file against the eager,
unpruned model), then every file of a run timed in ONNX Runtime taking turns step by step on the same random
batches (1 intra-op thread, median of the timed steps).

    python measure.py OUT_DIR STEPS RUN [RUN ...]
"""
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from quadranet.deploy import INPUT, onnx_session, read_metadata

THRESHOLDS = [None, 0.01, 0.02, 0.05, 0.1]


def main(out: str, steps: str, *runs: str) -> None:
    out, steps, rows = Path(out), int(steps), []
    out.mkdir(parents=True, exist_ok=True)
    for run in runs:
        files = {}
        for t in THRESHOLDS:
            path = out / f"{Path(run).parts[-4]}-{Path(run).parts[-3]}-{Path(run).name}-{t or 'none'}.onnx"
            cmd = [sys.executable, "-m", "quadranet", "export", "--run", run, "--out", str(path), "--batch", "100",
                   "--check", "100000"] + ([] if t is None else ["--prune", str(t)])
            proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
            check = json.loads([line for line in proc.stdout.splitlines() if line.startswith("{")][-1])
            prune = read_metadata(path).get("prune") or {}
            files[t] = path
            rows.append(dict(run=run, threshold=t, pruned=len(prune.get("pruned", [])),
                             quadratic_layers=prune.get("quadratic_layers_before"), images=check["images"],
                             acc1_eager=check["acc1_eager"], acc1_exported=check["acc1_exported"],
                             top1_agree=check["top1_agree"]))
        sessions = {t: onnx_session(p, threads=1) for t, p in files.items()}
        shape = read_metadata(files[None])["input_shape"]
        times = {t: [] for t in sessions}
        rng = np.random.default_rng(0)
        for step in range(steps + 3):  # 3 warm-up rounds
            x = rng.standard_normal(shape, dtype=np.float32)
            for t, s in sessions.items():
                start = time.perf_counter()
                s.run(None, {INPUT: x})
                if step >= 3:
                    times[t].append(time.perf_counter() - start)
        for row in rows:
            if row["run"] == run:
                row["ort_ms_per_image"] = 1000 * statistics.median(times[row["threshold"]]) / shape[0]
                row["speedup_vs_unpruned"] = statistics.median(times[None]) / statistics.median(times[row["threshold"]])
    import pandas as pd

    df = pd.DataFrame(rows)
    df["acc1_change_pp"] = df["acc1_exported"] - df["acc1_eager"]
    (out / "prune.csv").write_text(df.to_csv(index=False))
    print(df.drop(columns="run").round(4).to_string(index=False))


if __name__ == "__main__":
    main(*sys.argv[1:])
