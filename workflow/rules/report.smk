# Stage 3: collect every run folder (and the reference runs committed under results/reference/<hardware>/)
# into pandas, then tables, figures and the claims report. Only the `quadranet` CLI runs here.
import pandas as pd

from quadranet.report import BAND, FIGURES, TABLES

COLLECTED = {name: f"results/collected/{name}.csv" for name in ("runs", "curves", "bench")}


rule manifest:
    output:
        "results/manifest.tsv",
    log:
        "results/logs/report/manifest.log",
    params:
        text=pd.DataFrame(MANIFEST, columns=MANIFEST_COLUMNS).to_csv(sep="\t", index=False),
    localrule: True
    conda:
        "../../envs/quadranet.yaml"
    shell:
        WRITE_TEXT


rule collect:
    input:
        manifest=rules.manifest.output[0],
        runs=[done(r) for r in list(RUNS) + list(DETECT_RUNS)],
        bench=BENCH,
    output:
        **COLLECTED,
    log:
        "results/logs/report/collect.log",
    params:
        reference=config["report"]["reference"],
    localrule: True
    conda:
        "../../envs/quadranet.yaml"
    shell:
        f"{QUADRANET} collect --manifest {{input.manifest}} --bench {{input.bench}} --reference {{params.reference}}"
        " --out-dir $(dirname {output.runs}) > {log} 2>&1"


rule tables:
    input:
        **COLLECTED,
    output:
        [report(f"results/tables/{name}.{ext}", category="Tables", caption="../report/tables.rst")
         for name in TABLES for ext in ("csv", "md", "tex")],
    log:
        "results/logs/report/tables.log",
    localrule: True
    conda:
        "../../envs/quadranet.yaml"
    shell:
        f"{QUADRANET} tables --collected $(dirname {{input.runs}}) --out-dir results/tables"
        f" --tolerance-pp {config['report']['tolerance_pp']} > {{log}} 2>&1"


rule figures:
    input:
        **COLLECTED,
    output:
        [report(f"figures/{name}.{ext}", category="Figures", caption="../report/figures.rst")
         for name in FIGURES for ext in ("png", "pdf")],
    log:
        "results/logs/report/figures.log",
    params:
        arch=config["report"]["architecture"],
    localrule: True
    conda:
        "../../envs/quadranet.yaml"
    shell:
        f"{QUADRANET} figures --collected $(dirname {{input.runs}}) --out-dir figures --arch {{params.arch}}"
        " > {log} 2>&1"


rule claims:
    input:
        **COLLECTED,
        paper=f"{workflow.basedir}/workflow/paper_numbers.yaml",
    output:
        md=report("results/claims.md", category="Claims", caption="../report/claims.rst"),
        csv="results/claims.csv",
    log:
        "results/logs/report/claims.log",
    params:
        scale=config["scale"],
        competitive_pp=config["report"]["competitive_pp"],
        tolerance_pp=config["report"]["tolerance_pp"],
        band=" ".join(str(v) for v in config["e3"].get("band", BAND)),
    localrule: True
    conda:
        "../../envs/quadranet.yaml"
    shell:
        f"{QUADRANET} claims --collected $(dirname {{input.runs}}) --paper {{input.paper}} --scale {{params.scale}}"
        " --competitive-pp {params.competitive_pp} --tolerance-pp {params.tolerance_pp} --band {params.band}"
        " --out {output.md} > {log} 2>&1"
