# E5 efficiency (table 5, figure 7): train-step and inference speed and memory of each model's variants
# (first-order, adapted, adapted_frozen, adapted_memeff, adapted_autograd, v1, lora), and one quadratic layer with
# plain, memory-efficient and standard-autograd backward. Each CSV is measured in one process on one device, layout
# and precision, so ratios only compare rows of the same file.


rule bench:
    output:
        "results/bench/{model}.csv",
    log:
        "results/logs/bench/{model}.log",
    params:
        args=lambda w: config["e5"]["layer_args"] if w.model == "layer" else
        f"{config['e5']['model_args']} {config['e5']['models'][w.model]}",
        what=lambda w: "--layer" if w.model == "layer" else f"--model {w.model}",
    threads: config["resources"]["threads"]
    resources:
        gpu=min(config["resources"]["gpus"], 1),
        tasks_per_gpu=0,
        runtime=config["resources"]["runtime"],
    conda:
        "../../envs/quadranet.yaml"
    shell:
        f"OMP_NUM_THREADS={{threads}} {QUADRANET} bench {{params.what}} {{params.args}} --out {{output}} > {{log}} 2>&1"


BENCH = (
    expand("results/bench/{model}.csv", model=[*config["e5"]["models"], "layer"]) if config["e5"]["enabled"] else []
)
