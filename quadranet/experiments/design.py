"""The experiments as runs of the registry. Every run config = config.run, then the task (target / source data), the
backbone's weights, the method (config.methods), the variant, the seed, deep-merged in that order.

  E1    adaptation vs scratch across model scales (paper: ImageNet-1K table; Fig 2)
  E2    pretraining scale: first-order pretraining on growing source sets, then V2 adaptation (Fig 2)
  E3    linear vs nonlinear shift: LoRA vs quadratic adapter vs finetune at matched budgets (Figs 1, 3)
  E4    ablations: rank, dilation, kernel, placement, primary frozen or not, one stage or two (table 4)
  coco  COCO detection / segmentation with a quadratized backbone (table 3), `quadranet detect train` runs
E5 (efficiency) benchmarks models; it has no runs.
"""
from __future__ import annotations

from typing import Optional

from ..config import deep_merge
from .registry import Registry, run_dir
from .sheet import Sheet

EXPERIMENTS = ("e1", "e2", "e3", "e4", "coco")  # registered in this order: it is the order of the manifest


def build_registry(config: dict, sheet: Sheet, check_files: bool = True) -> Registry:
    """Every run of the enabled experiments of the validated workflow `config` (`validate_workflow_config`, or the
    workflow's own validation) on the backbones of `sheet` (`read_sheet`). check_files: see `Registry`."""
    registry = Registry(check_files=check_files)
    design = Design(config, sheet, registry)
    for exp in EXPERIMENTS:
        if config[exp]["enabled"]:
            getattr(design, exp)()
    return registry


class Design:
    """Registers the runs of each experiment of `config` in `registry`."""

    def __init__(self, config: dict, sheet: Sheet, registry: Registry):
        self.config, self.sheet, self.registry = config, sheet, registry

    # --- building blocks -------------------------------------------------------------------------------------------

    def add_run(self, exp, backbone, method, variant, seed, *parts, detection=False) -> str:
        """Register the run whose config is config.run (none for detection, whose `parts` are complete) merged with
        `parts`, then the seed; returns its id (`Registry.add`)."""
        cfg = deep_merge({} if detection else self.config["run"], *parts, {"seed": seed})
        return self.registry.add(exp, backbone, method, variant, seed, cfg, detection=detection)

    def seeds(self, exp: str) -> list:
        return self.config[exp].get("seeds", self.config["seeds"])

    def named_backbone(self, key: str, name: str) -> str:
        """`name`, given by config key `key`, when it is a row of the sheet."""
        if name not in self.sheet:
            raise ValueError(f"{key}: backbone {name!r} is not a row of {self.sheet.path}; rows: "
                             f"{list(self.sheet.rows)}")
        return name

    def method_keys(self, key: str, method: str) -> dict:
        """The run keys of config.methods entry `method`, named by config key `key`."""
        if method not in self.config["methods"]:
            raise ValueError(f"{key} names method {method!r}, which config.methods does not define; "
                             f"defined: {sorted(self.config['methods'])}")
        return self.config["methods"][method]

    def method_run(self, exp: str, method: str) -> dict:
        """The method's config keys, then the experiment's own (config.<exp>.run)."""
        return deep_merge(self.method_keys(exp, method), self.config[exp].get("run"))

    def from_random_init(self, method: str) -> bool:
        return self.config["methods"][method]["method"] == "scratch"

    def weights_of(self, name: str) -> str:
        """Where backbone `name`'s first-order weights come from: config weights.<name> wins over the sheet."""
        return (self.config.get("weights") or {}).get(name) or self.sheet[name]["weights"]

    def native(self, name: str) -> dict:
        """data.resolution = the backbone's native input size, when config native_resolution asks for it."""
        return {"data": {"resolution": int(self.sheet[name]["input_size"])}} if self.config["native_resolution"] else {}

    def arch(self, name: str) -> dict:
        """Run keys of backbone `name` from random init: its arch, at its native resolution if asked."""
        return deep_merge({"model": {"arch": self.sheet[name]["arch"]}}, self.native(name))

    def pretrain_run(self, name: str, per_class: Optional[int] = None) -> str:
        """Run id of `name`'s first-order pretraining on the source task (train_per_class = per_class)."""
        source = self.config["source"]
        src = deep_merge(source, {"data": {"train_per_class": per_class}} if per_class else {})
        n = src["data"].get("train_per_class") or "all"
        model = {"method": "scratch",
                 "model": {"arch": self.sheet[name]["arch"], "pretrained": "none", "quadratic": False}}
        return self.add_run("pretrain", name, "first_order", f"src{n}", source.get("seed", 0), self.native(name), src,
                            model)

    def backbone_model(self, name: str, per_class: Optional[int] = None) -> dict:
        """Run config keys that put backbone `name` in a run: its arch, its first-order weights (used by the methods
        that start from them; scratch methods set pretrained none), its native resolution if asked.
        per_class: pretrain it on a source set of that many images per class (E2), whatever the sheet says."""
        weights = self.weights_of(name)
        if weights == "workflow" or per_class is not None:
            weights = run_dir(self.pretrain_run(name, per_class))
        return deep_merge({"model": {"arch": self.sheet[name]["arch"], "pretrained": weights}}, self.native(name))

    def v1_model(self, name: str, keys: dict) -> Optional[dict]:
        """`keys` with model.arch 'v1' replaced by backbone `name`'s QuadraNet V1 counterpart (sheet v1_arch);
        None when the backbone has none (such a method skips it)."""
        if (keys.get("model") or {}).get("arch") != "v1":
            return keys
        v1 = self.sheet[name]["v1_arch"]
        return deep_merge(keys, {"model": {"arch": v1}}) if v1 else None

    def e1_setting(self, key: str, setting: str) -> str:
        """`setting`, given by config key `key`, when it is one of e1.settings."""
        if setting not in self.config["e1"]["settings"]:
            raise ValueError(f"{key}: setting {setting!r} is not one of e1.settings "
                             f"{list(self.config['e1']['settings'])}")
        return setting

    # --- E1 --------------------------------------------------------------------------------------------------------

    def e1_backbones(self) -> list:
        """config e1.backbones if given, else every sheet row whose e1_scales lists this config's scale."""
        names = self.config["e1"].get("backbones")
        if names is None:
            scale = self.config["scale"]
            names = [n for n, scales in self.sheet.column("e1_scales").items() if scale in scales.split(",")]
            if not names:
                raise ValueError(f"E1 has no backbone: no row of {self.sheet.path} lists scale {scale!r} in "
                                 f"e1_scales, and the config sets no e1.backbones")
        return [self.named_backbone("e1.backbones", n) for n in names]

    def family(self, name: str) -> dict:
        """config e1.families of the sheet family of backbone `name`: what its E1 runs do differently ({} when
        unset): `settings`, `methods`, `seeds` (subsets of E1's), `run` (keys merged last into its runs) and
        `method_run` (method -> keys merged after `run` into that method's runs only)."""
        families, known = self.config["e1"].get("families") or {}, set(self.sheet.column("family").values())
        unknown = set(families) - known
        if unknown:
            raise ValueError(f"e1.families names families {sorted(unknown)} that no row of {self.sheet.path} has; "
                             f"families: {sorted(known)}")
        fam = self.sheet[name]["family"]
        chosen = families.get(fam, {})
        for key, within in (("settings", "settings"), ("methods", "methods"), ("method_run", "methods")):
            extra = set(chosen.get(key, [])) - set(self.config["e1"][within])
            if extra:
                raise ValueError(f"e1.families.{fam}.{key} names {sorted(extra)}, not in e1.{within}")
        return chosen

    def e1_run(self, name: str, method: str, setting: str, seed: int) -> Optional[str]:
        """Register E1 run (backbone, method, setting, seed); returns its id, or None where the method does not
        apply (a V1 method on a backbone without a V1 counterpart).

        Runs from random init are the same in every setting (one run, listed under each). The others start from
        the setting's first-order weights: `fo_scratch`, the same seed's first-order network trained from scratch
        on the target task (the paper's ImageNet-1K setting, where the pretrained model was trained on the task
        itself), or `sheet`, the backbone's weights column (e.g. pretrained on another source task).
        """
        keys = self.v1_model(name, self.method_run("e1", method))
        if keys is None:
            return None
        start = self.arch(name) if self.from_random_init(method) else self.e1_start(name, setting, seed)
        fam = self.family(name)
        return self.add_run("e1", name, method, setting, seed, self.config["target"], start, keys, fam.get("run"),
                            (fam.get("method_run") or {}).get(method))

    def e1_start(self, name: str, setting: str, seed: int) -> dict:
        """Model keys of the first-order weights that E1 setting `setting` starts seed `seed` of backbone `name`
        from."""
        if self.weights_of(name) == "none":
            raise ValueError(f"{self.sheet.path}: row {name!r}, column weights: 'none' means trained from scratch only "
                             f"(an architecture of its own, such as HorNet or GFNet, has no first-order weights to "
                             f"adapt), but a run here adapts it (E1 setting {setting!r}); give its family only methods "
                             f"from random init, e.g. e1.families.{self.sheet[name]['family']}.methods: [fo_scratch]")
        spec = self.config["e1"]["settings"][setting]
        if spec["weights"] == "sheet":
            return deep_merge(self.backbone_model(name), spec.get("run"))
        if "fo_scratch" not in self.config["methods"]:
            raise ValueError(f"e1 setting {setting!r} starts from the fo_scratch runs; config.methods has no "
                             f"fo_scratch")
        fo = run_dir(self.e1_run(name, "fo_scratch", setting, seed))
        return deep_merge({"model": {"arch": self.sheet[name]["arch"], "pretrained": fo}}, spec.get("run"))

    def e1(self) -> None:
        e1 = self.config["e1"]
        for name in self.e1_backbones():
            fam = self.family(name)
            for setting in fam.get("settings", list(e1["settings"])):
                for method in fam.get("methods", e1["methods"]):
                    for seed in fam.get("seeds", self.seeds("e1")):
                        self.e1_run(name, method, setting, seed)

    # --- E2-E4, COCO -----------------------------------------------------------------------------------------------

    def e2(self) -> None:
        """Adaptation after first-order pretraining on source sets of growing size, against the E1 runs from
        random init on the same target (their configs are identical, so they are E1's runs)."""
        e2 = self.config["e2"]
        name = self.named_backbone("e2.backbone", e2["backbone"])
        for n in e2["source_per_class"]:
            for method in e2["methods"]:
                for seed in self.seeds("e2"):
                    self.add_run("e2", name, method, f"src{n}", seed, self.config["target"],
                                 self.backbone_model(name, n), self.method_run("e2", method))
        for method in e2["reference"]:
            keys = self.method_keys("e2.reference", method)
            for seed in self.seeds("e2"):
                self.add_run("e2", name, method, "none", seed, self.config["target"], self.arch(name), keys)

    def e3(self) -> None:
        """The E1 setting's model of each seed adapted to pixel-wise shifts of the target task, at the calibrated
        strengths of each shift (config e3.strength: one strength or a list; e3.band is the zero-shot accuracy
        range a shift must reach to count)."""
        e3 = self.config["e3"]
        name = self.named_backbone("e3.backbone", e3["backbone"])
        setting = self.e1_setting("e3.setting", e3["setting"])
        for shift, strengths in e3["strength"].items():
            for strength in strengths if isinstance(strengths, list) else [strengths]:
                task = deep_merge(self.config["target"], {"data": e3["data"]},
                                  {"data": {"shift": shift, "shift_strength": float(strength)}})
                for label, method in e3["methods"].items():
                    keys = self.method_run("e3", method)
                    if self.from_random_init(method):
                        raise ValueError(f"e3.methods.{label}: method {method!r} trains from random init; E3 adapts "
                                         f"a trained model")
                    for seed in self.seeds("e3"):
                        self.add_run("e3", name, label, f"{shift}-{strength}", seed, task,
                                     self.e1_start(name, setting, seed), keys)

    def e4(self) -> None:
        """Ablations of the adaptation of E1 setting e4.setting: each variant changes one setting."""
        e4 = self.config["e4"]
        name = self.named_backbone("e4.backbone", e4["backbone"])
        setting = self.e1_setting("e4.setting", e4["setting"])
        for variant in e4["variants"]:
            for seed in self.seeds("e4"):
                self.add_run("e4", name, e4["method"], variant["name"], seed, self.config["target"],
                             self.e1_start(name, setting, seed), self.method_run("e4", e4["method"]),
                             variant.get("run"))

    def coco(self) -> None:
        coco = self.config["coco"]
        schedules = coco.get("schedules") or {"base": {}}  # variant name -> run keys (1x, 3x, ...)
        for name in coco["backbones"]:
            weights = self.backbone_model(self.named_backbone("coco.backbones", name))["model"]
            model = {"backbone": weights["arch"], "pretrained": weights["pretrained"]}
            for variant, schedule in schedules.items():
                for method, overrides in coco["methods"].items():
                    for seed in self.seeds("coco"):
                        self.add_run("coco", name, method, variant, seed, coco["run"], {"model": model}, schedule,
                                     overrides, detection=True)
