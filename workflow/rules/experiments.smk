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
    if method not in config["methods"]:
        raise ValueError(f"{exp} names method {method!r}, which config.methods does not define; "
                         f"defined: {sorted(config['methods'])}")
    return merge(config["methods"][method], config[exp].get("run"))


def from_random_init(method):
    return config["methods"][method]["method"] == "scratch"


def e1_backbones():
    """config e1.backbones if given, else every sheet row whose e1_scales lists this config's scale."""
    names = config["e1"].get("backbones")
    if names is None:
        names = [n for n, scales in SHEET["e1_scales"].items() if config["scale"] in scales.split(",")]
    if not names:
        raise ValueError(f"E1 has no backbone: no row of {config['sheet']} lists scale {config['scale']!r} in "
                         f"e1_scales, and the config sets no e1.backbones")
    return names


def family(name):
    """config e1.families of the sheet family of backbone `name`: what its E1 runs do differently ({} when unset):
    `settings`, `methods`, `seeds` (subsets of E1's), `run` (keys merged last into its runs) and `method_run`
    (method -> keys merged after `run` into that method's runs only)."""
    families = config["e1"].get("families") or {}
    unknown = set(families) - set(SHEET["family"])
    if unknown:
        raise ValueError(f"e1.families names families {sorted(unknown)} that no row of {config['sheet']} has; "
                         f"families: {sorted(set(SHEET['family']))}")
    chosen = families.get(backbone(name)["family"], {})
    for key, within in (("settings", "settings"), ("methods", "methods"), ("method_run", "methods")):
        extra = set(chosen.get(key, [])) - set(config["e1"][within])
        if extra:
            raise ValueError(f"e1.families.{backbone(name)['family']}.{key} names {sorted(extra)}, not in e1.{within}")
    return chosen


def e1_run(name, method, setting, seed):
    """Register E1 run (backbone, method, setting, seed); returns its id, or None where the method does not apply
    (a V1 method on a backbone without a V1 counterpart).

    Runs from random init are the same in every setting (one run, listed under each). The others start from
    the setting's first-order weights: `fo_scratch`, the same seed's first-order network trained from scratch on
    the target task (the paper's ImageNet-1K setting, where the pretrained model was trained on the task
    itself), or `sheet`, the backbone's weights column (e.g. pretrained on another source task).
    """
    keys = v1_model(name, method_run("e1", method))
    if keys is None:
        return None
    start = (merge({"model": {"arch": backbone(name)["arch"]}}, native(name)) if from_random_init(method)
             else e1_start(name, setting, seed))
    fam = family(name)
    return add_run("e1", name, method, setting, seed, config["target"], start, keys, fam.get("run"),
                   (fam.get("method_run") or {}).get(method))


def e1_start(name, setting, seed):
    """Model keys of the first-order weights that E1 setting `setting` starts seed `seed` of backbone `name` from."""
    spec = config["e1"]["settings"][setting]
    if spec["weights"] == "sheet":
        return merge(backbone_model(name), spec.get("run"))
    if "fo_scratch" not in config["methods"]:
        raise ValueError(f"e1 setting {setting!r} starts from the fo_scratch runs; config.methods has no fo_scratch")
    fo = run_dir(e1_run(name, "fo_scratch", setting, seed))
    return merge({"model": {"arch": backbone(name)["arch"], "pretrained": fo}}, spec.get("run"))


def e1():
    for name in e1_backbones():
        fam = family(name)
        for setting in fam.get("settings", list(config["e1"]["settings"])):
            for method in fam.get("methods", config["e1"]["methods"]):
                for seed in fam.get("seeds", seeds("e1")):
                    e1_run(name, method, setting, seed)


def e2():
    """Adaptation after first-order pretraining on source sets of growing size, against the E1 runs from
    random init on the same target (their configs are identical, so they are E1's runs)."""
    name = config["e2"]["backbone"]
    for n in config["e2"]["source_per_class"]:
        for method in config["e2"]["methods"]:
            for seed in seeds("e2"):
                add_run("e2", name, method, f"src{n}", seed, config["target"], backbone_model(name, n),
                        method_run("e2", method))
    for method in config["e2"]["reference"]:
        for seed in seeds("e2"):
            add_run("e2", name, method, "none", seed, config["target"],
                    merge({"model": {"arch": backbone(name)["arch"]}}, native(name)), config["methods"][method])


def e3():
    """The E1 setting's model of each seed adapted to pixel-wise shifts of the target task, at the calibrated
    strengths of each shift (config e3.strength: one strength or a list; e3.band is the zero-shot accuracy range
    a shift must reach to count)."""
    name, setting = config["e3"]["backbone"], config["e3"]["setting"]
    for shift, strengths in config["e3"]["strength"].items():
        for strength in strengths if isinstance(strengths, list) else [strengths]:
            task = merge(config["target"], {"data": config["e3"]["data"]},
                         {"data": {"shift": shift, "shift_strength": float(strength)}})
            for label, method in config["e3"]["methods"].items():
                if from_random_init(method):
                    raise ValueError(f"e3 method {method!r} trains from random init; E3 adapts a trained model")
                for seed in seeds("e3"):
                    add_run("e3", name, label, f"{shift}-{strength}", seed, task, e1_start(name, setting, seed),
                            method_run("e3", method))


def e4():
    """Ablations of the adaptation of E1 setting e4.setting: each variant changes one setting."""
    name, method, setting = config["e4"]["backbone"], config["e4"]["method"], config["e4"]["setting"]
    for variant in config["e4"]["variants"]:
        for seed in seeds("e4"):
            add_run("e4", name, method, variant["name"], seed, config["target"], e1_start(name, setting, seed),
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
