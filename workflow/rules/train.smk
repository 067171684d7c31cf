# Stage 2: every run of the experiments (scratch, adapt, finetune, lora) is one `quadranet train` job.
# The only declared output is metrics.json, written last and atomically: an interrupted job leaves no
# incomplete output behind, and its checkpoints (<run>/checkpoints/, not outputs) let the rerun resume.


rule run_config:
    output:
        f"{CONFIGS_DIR}/{{run}}.yaml",
    log:
        "results/logs/configs/{run}.log",
    params:
        cfg=lambda w: run_config(w.run),
    localrule: True
    run:
        write_file(output[0], yaml.safe_dump(params.cfg, sort_keys=False), log[0])


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
