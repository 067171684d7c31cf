# COCO detection / instance segmentation (paper table 3): a quadratized backbone in a torchvision detector,
# one `quadranet detect train` job per run. Off unless coco.enabled (the embedded canvases take minutes per
# run on a CPU; the paper scale needs COCO 2017 under coco.run.data.root).


rule detect:
    input:
        config=f"{CONFIGS_DIR}/coco/{{run}}.yaml",
        pretrained=lambda w: needs(f"coco/{w.run}"),
    output:
        metrics=f"{RUNS_DIR}/coco/{{run}}/metrics.json",
    log:
        "results/logs/coco/{run}.log",
    threads: config["resources"]["threads"]
    resources:
        gpu=config["resources"]["gpus"],
        tasks_per_gpu=0,
        mem_mb=config["resources"]["mem_mb"],
        runtime=config["resources"]["runtime"],
    conda:
        "../../envs/quadranet.yaml"
    shell:
        train_shell("gpus", "detect train")
