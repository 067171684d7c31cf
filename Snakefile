# QuadraNet V2 reproduction workflow (arXiv 2405.03192). Thin entry point: the stages live in workflow/rules/.
#   snakemake --cores all                                          # embedded default (Fashion-MNIST, CPU)
#   snakemake --cores all --configfile workflow/config/smoke.yaml  # the tests' small version of it
#   snakemake --profile profiles/local-gpu --configfile workflow/config/gpu.yaml  # one GPU
#   snakemake --profile profiles/slurm --configfile workflow/config/paper.yaml  # ImageNet / COCO on SLURM
#   snakemake --report results/report.html                      # after a run: browsable report
# A --configfile replaces the default config entirely (each config file is complete and validated).
from snakemake.utils import min_version

min_version("9.0")


if not workflow.overwrite_configfiles:

    configfile: f"{workflow.basedir}/workflow/config/default.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/pretrain.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/detect.smk"
include: "workflow/rules/bench.smk"
include: "workflow/rules/report.smk"


rule all:
    default_target: True
    input:
        rules.claims.output,
        rules.tables.output,
        rules.figures.output,
