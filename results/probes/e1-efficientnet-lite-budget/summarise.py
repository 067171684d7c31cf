"""summary.csv: one row per run under runs/ (python3 summarise.py, in this folder)."""
import json
import pathlib

import pandas as pd

rows = []
for f in sorted(pathlib.Path("runs").glob("*/metrics.json")):
    m = json.loads(f.read_text())
    c = m["provenance"]["config"]
    rows.append(dict(run=f.parent.name, method=m["method"], quadratic=c["model"]["quadratic"],
                     resolution=c["data"]["resolution"], batch_size=c["data"]["batch_size"], epochs=m["epochs"],
                     steps=m["steps"], seed=c["seed"], acc1=round(m["acc1"], 2), best_acc1=round(m["best_acc1"], 2),
                     device_s=round(m["device_seconds"]["total"], 1), git=m["provenance"]["git_commit"][:10],
                     dirty=m["provenance"]["git_dirty"]))
pd.DataFrame(rows).sort_values(["resolution", "batch_size", "method", "epochs", "seed"]).to_csv("summary.csv", index=False)
