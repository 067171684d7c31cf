# Stage 1: first-order pretraining of the backbones whose weights the workflow makes itself (sheet: weights
# = workflow) on the source task (config: source), at one or more source-set sizes (E2).


rule pretrain:
    input:
        config=f"{CONFIGS_DIR}/pretrain/{{run}}.yaml",
    output:
        metrics=f"{RUNS_DIR}/pretrain/{{run}}/metrics.json",
    log:
        "results/logs/pretrain/{run}.log",
    threads: config["resources"]["threads"]
    resources:
        gpu=config["resources"]["pretrain_gpus"],
        tasks_per_gpu=0,
        mem_mb=config["resources"]["mem_mb"],
        runtime=config["resources"]["runtime"],
    conda:
        "../../envs/quadranet.yaml"
    shell:
        train_shell("pretrain_gpus")
