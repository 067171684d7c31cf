# The experiments, as runs in the registry (common.smk). Every run config = config.run, then the task
# (target / source data), the backbone's weights, the method (config.methods), the variant, the seed.
#   E1  adaptation vs scratch across model scales (paper: ImageNet-1K table; Fig 2)
#   E2  pretraining scale: first-order pretraining on growing source sets, then V2 adaptation (Fig 2)
#   E3  linear vs nonlinear shift: LoRA vs quadratic adapter vs finetune at matched budgets (Figs 1, 3)
#   E4  ablations: rank, dilation, kernel, placement, primary frozen or not, one stage or two (table 4)
#   coco  COCO detection / segmentation with a quadratized backbone (table 3), run by detect.smk
# E5 (efficiency) is bench.smk.


def method_run(exp, method):
    """The method's config keys, then the experiment's own (config.<exp>.run)."""
    return merge(config["methods"][method], config[exp].get("run"))


def e1_backbones():
    """config e1.backbones if given, else every sheet row whose e1_scales lists this config's scale."""
    names = config["e1"].get("backbones")
    if names is None:
        names = [n for n, scales in SHEET["e1_scales"].items() if config["scale"] in scales.split(",")]
    if not names:
        raise ValueError(f"E1 has no backbone: no row of {config['sheet']} lists scale {config['scale']!r} in "
                         f"e1_scales, and the config sets no e1.backbones")
    return names


def family_run(name):
    """config e1.family_run of the sheet family of backbone `name`: run keys for its E1 runs ({} when unset)."""
    families = config["e1"].get("family_run") or {}
    unknown = set(families) - set(SHEET["family"])
    if unknown:
        raise ValueError(f"e1.family_run names families {sorted(unknown)} that no row of {config['sheet']} has; "
                         f"families: {sorted(set(SHEET['family']))}")
    return families.get(backbone(name)["family"], {})


def e1():
    for name in e1_backbones():
        for method in config["e1"]["methods"]:
            for seed in seeds("e1"):
                add_run("e1", name, method, "base", seed, config["target"], backbone_model(name),
                        method_run("e1", method), family_run(name))


def e2():
    name = config["e2"]["backbone"]
    for n in config["e2"]["source_per_class"]:
        for method in config["e2"]["methods"]:
            for seed in seeds("e2"):
                add_run("e2", name, method, f"src{n}", seed, config["target"], backbone_model(name, n),
                        method_run("e2", method))
    for method in config["e2"]["reference"]:  # the runs without pretraining that E2 is compared with
        for seed in seeds("e2"):
            add_run("e2", name, method, "none", seed, config["target"], backbone_model(name),
                    method_run("e2", method))


def e3():
    name = config["e3"]["backbone"]
    task = merge({"data": config["source"]["data"]}, {"data": config["e3"]["data"]})  # the source model's task
    for shift in config["e3"]["shifts"]:
        for strength in config["e3"]["strengths"]:
            shifted = {"data": {"shift": shift, "shift_strength": float(strength)}}
            for method in config["e3"]["methods"]:
                for seed in seeds("e3"):
                    add_run("e3", name, method, f"{shift}-{strength}", seed, task, shifted,
                            backbone_model(name), method_run("e3", method))


def e4():
    name, method = config["e4"]["backbone"], config["e4"]["method"]
    for variant in config["e4"]["variants"]:
        for seed in seeds("e4"):
            add_run("e4", name, method, variant["name"], seed, config["target"], backbone_model(name),
                    method_run("e4", method), variant.get("run"))


def coco():
    schedules = config["coco"].get("schedules") or {"base": {}}  # variant name -> run keys (1x, 3x, ...)
    for name in config["coco"]["backbones"]:
        weights = backbone_model(name)["model"]
        model = {"backbone": weights["arch"], "pretrained": weights["pretrained"]}
        for variant, schedule in schedules.items():
            for method, overrides in config["coco"]["methods"].items():
                for seed in seeds("coco"):
                    add_run("coco", name, method, variant, seed, config["coco"]["run"], {"model": model}, schedule,
                            overrides, registry=DETECT_RUNS)


for exp, register in dict(e1=e1, e2=e2, e3=e3, e4=e4, coco=coco).items():
    if config[exp]["enabled"]:
        register()
