# Stage 2: every run of the experiments (scratch, adapt, finetune, lora) is one `quadranet train` job.
# The only declared output is metrics.json, written last and atomically: an interrupted job leaves no
# incomplete output behind, and its checkpoints (<run>/checkpoints/, not outputs) let the rerun resume.


rule run_config:
    output:
        f"{CONFIGS_DIR}/{{run}}.yaml",
    log:
        "results/logs/configs/{run}.log",
    params:
        text=lambda w: yaml.safe_dump(REGISTRY.config(w.run), sort_keys=False),
    localrule: True
    conda:
        "../../envs/quadranet.yaml"
    shell:
        WRITE_TEXT


rule train:
    input:
        config=f"{CONFIGS_DIR}/{{exp}}/{{run}}.yaml",
        pretrained=lambda w: needs(f"{w.exp}/{w.run}"),
    output:
        metrics=f"{RUNS_DIR}/{{exp}}/{{run}}/metrics.json",
    log:
        "results/logs/{exp}/{run}.log",
    wildcard_constraints:
        exp="e[0-9]+",
    threads: config["resources"]["threads"]
    resources:
        gpu=config["resources"]["gpus"],
        tasks_per_gpu=0,
        mem_mb=config["resources"]["mem_mb"],
        runtime=config["resources"]["runtime"],
    conda:
        "../../envs/quadranet.yaml"
    shell:
        train_shell("gpus")
