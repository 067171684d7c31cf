"""The run registry (quadranet.experiments): which runs a workflow config asks for, under which ids, in which roles."""
import pytest

from quadranet.experiments import MANIFEST_COLUMNS, Registry, build_registry, read_sheet


def plan(config, sheet):
    """The registry of `config` without the data and weights checks."""
    return build_registry(config, sheet, check_files=False)


def test_smoke_config_registers_its_runs_in_order(workflow_config, sheet):
    registry = plan(workflow_config("smoke"), sheet)
    assert (len(registry.runs), len(registry.detect_runs), len(registry.manifest)) == (19, 0, 25)
    assert list(registry.runs)[:8] == [f"e1/test_convnext/{m}/intask/seed0" for m in (
        "fo_scratch", "scratch", "v1_scratch", "adapt", "finetune", "lora", "head")] + [
        "pretrain/test_convnext/first_order/src10/seed0"]  # the transfer setting's weights, before its first run
    e1 = ("fo_scratch", "scratch", "v1_scratch", "adapt", "finetune", "lora", "head")
    assert [(r["exp"], r["method"], r["variant"]) for r in registry.manifest] == (
        [("e1", m, "intask") for m in e1] + [("e1", m, "transfer") for m in e1[:3]]
        + [("pretrain", "first_order", "src10")] + [("e1", m, "transfer") for m in e1[3:]]
        + [("pretrain", "first_order", "src5"), ("e2", "adapt", "src5"), ("e2", "adapt", "src10"),
           ("e2", "scratch", "none")]
        + [("e3", m, s) for s in ("contrast-0.9", "gamma-0.6") for m in ("adapt", "lora")]
        + [("e4", "adapt", "base"), ("e4", "adapt", "one_stage")])


def test_default_config_registers_61_runs_in_70_roles(workflow_config, sheet):
    registry = plan(workflow_config("default"), sheet)
    assert (len(registry.runs), len(registry.detect_runs), len(registry.manifest)) == (61, 0, 70)
    assert {rid.split("/")[0] for rid in registry.runs} == {"pretrain", "e1", "e3", "e4"}  # E2 and COCO off
    assert all(list(row) == MANIFEST_COLUMNS for row in registry.manifest)


def test_identical_configs_are_one_run_listed_under_each_experiment(workflow_config, sheet):
    registry = plan(workflow_config("smoke"), sheet)
    roles = {(r["exp"], r["method"], r["variant"]): r["run"] for r in registry.manifest}
    # E2's reference from random init is E1's scratch run; E4's base variant is E1's transfer adaptation
    assert roles[("e2", "scratch", "none")] == roles[("e1", "scratch", "intask")]
    assert roles[("e1", "scratch", "intask")] == "e1/test_convnext/scratch/intask/seed0"
    assert roles[("e4", "adapt", "base")] == "e1/test_convnext/adapt/transfer/seed0"
    # E2 at the sheet's own source size is E1's transfer run too; the other size is a run of its own
    assert roles[("e2", "adapt", "src10")] == "e1/test_convnext/adapt/transfer/seed0"
    assert roles[("e2", "adapt", "src5")] == "e2/test_convnext/adapt/src5/seed0"
    # runs from random init are listed under every setting, trained once
    assert roles[("e1", "scratch", "transfer")] == roles[("e1", "scratch", "intask")]


def test_run_configs_merge_run_task_weights_method_and_seed(workflow_config, sheet):
    config = workflow_config("smoke")
    cfg = plan(config, sheet).runs["e1/test_convnext/adapt/transfer/seed0"]
    assert cfg["model"] == {"arch": "test_convnext", "reset_head": True,
                            "pretrained": "results/runs/pretrain/test_convnext/first_order/src10/seed0"}
    assert cfg["data"]["classes"] == config["target"]["data"]["classes"]
    assert cfg["train"]["stages"] == config["methods"]["adapt"]["train"]["stages"]
    assert cfg["train"]["lr"] == config["run"]["train"]["lr"] and cfg["seed"] == 0


def test_a_v1_method_skips_a_backbone_without_v1_arch(workflow_config, sheet):
    config = workflow_config("smoke")
    config["e1"]["backbones"] = ["test_convnext", "test_resnet"]  # test_resnet's v1_arch is empty
    runs = plan(config, sheet).runs
    assert "e1/test_convnext/v1_scratch/intask/seed0" in runs
    assert runs["e1/test_convnext/v1_scratch/intask/seed0"]["model"]["arch"] == "quadranet_v1_test"
    assert {rid.split("/")[2] for rid in runs if rid.startswith("e1/test_resnet/")} == (
        set(config["e1"]["methods"]) - {"v1_scratch"})


def test_a_sheet_row_adds_exactly_that_backbones_runs(workflow_config, sheet, sheet_with):
    config = workflow_config("smoke")
    before = set(plan(config, sheet).runs)
    grown = read_sheet(sheet_with(["resnet10t_new", "ResNet", "10t", "5.4", "resnet10t", "workflow",
                                   "first-order pretraining by this workflow", "176", "smoke", ""]))
    gained = set(plan(config, grown).runs) - before
    first, *_ = config["e1"]["settings"]
    from_init = {m for m in config["e1"]["methods"] if config["methods"][m]["method"] == "scratch"}
    # runs from random init once (no V1 counterpart for a ResNet); the others once per setting
    assert gained == ({f"e1/resnet10t_new/{m}/{first}/seed0" for m in from_init - {"v1_scratch"}}
                      | {f"e1/resnet10t_new/{m}/{s}/seed0" for m in set(config["e1"]["methods"]) - from_init
                         for s in config["e1"]["settings"]}
                      | {"pretrain/resnet10t_new/first_order/src10/seed0"})


def test_e1_families_change_the_runs_of_that_family_only(workflow_config, sheet):
    config = workflow_config("smoke")
    config["e1"]["backbones"] = ["test_convnext", "efficientnet_lite0"]
    config["e1"]["families"] = {"EfficientNet-Lite": {"run": {"data": {"batch_size": 7}},
                                                      "method_run": {"scratch": {"train": {"epochs": 9}}}}}
    runs = plan(config, sheet).runs
    lite, atto = (runs[f"e1/{bb}/adapt/transfer/seed0"] for bb in ("efficientnet_lite0", "test_convnext"))
    assert lite["data"]["batch_size"] == 7 and atto["data"]["batch_size"] == config["run"]["data"]["batch_size"]
    assert lite["train"] == atto["train"]
    assert runs["e1/efficientnet_lite0/scratch/intask/seed0"]["train"]["epochs"] == 9  # that family's scratch only
    assert runs["e1/test_convnext/scratch/intask/seed0"]["train"]["epochs"] == config["methods"]["scratch"]["train"][
        "epochs"]


@pytest.mark.parametrize("edit, message", [
    (lambda c: c["e1"].update(backbones=["resnet_missing"]), "e1.backbones: backbone 'resnet_missing' is not a row of"),
    (lambda c: c["e2"].update(backbone="resnet_missing"), "e2.backbone: backbone 'resnet_missing' is not a row of"),
    (lambda c: c["e3"].update(setting="in_task"), "e3.setting: setting 'in_task' is not one of e1.settings"),
    (lambda c: c["e4"].update(method="adapt_twice"), "e4 names method 'adapt_twice', which config.methods does not"),
    (lambda c: c["e2"].update(reference=["scratch_twice"]), "e2.reference names method 'scratch_twice'"),
    (lambda c: c["e3"]["methods"].update(adapt="scratch"), "e3.methods.adapt: method 'scratch' trains from random"),
    (lambda c: c["e1"].update(families={"Swin": {}}), "e1.families names families ['Swin']"),
    (lambda c: c["e1"].update(families={"ConvNeXt": {"methods": ["dream"]}}), "names ['dream'], not in e1.methods"),
    (lambda c: c["e1"].update(families={"ConvNeXt": {"method_run": {"dream": {}}}}),
     "method_run names ['dream'], not in e1.methods"),
    (lambda c: c["run"]["train"].update(lr=-1.0),
     "run e1/test_convnext/fo_scratch/intask/seed0: train.lr=-1.0 must be > 0"),
])
def test_a_bad_config_is_refused_naming_the_key(workflow_config, sheet, edit, message):
    config = workflow_config("smoke")
    edit(config)
    with pytest.raises(ValueError) as error:
        plan(config, sheet)
    assert message in str(error.value)


def test_missing_data_and_weights_are_refused_only_when_files_are_checked(workflow_config, sheet, tmp_path):
    config = workflow_config("smoke")
    config["run"]["data"]["root"] = str(tmp_path / "no-fmnist")
    with pytest.raises(ValueError, match="apt-get install dataset-fashion-mnist"):
        build_registry(config, sheet)
    assert plan(config, sheet).runs  # planned before the data is on disk
    config = workflow_config("smoke")
    config["weights"] = {"test_convnext": str(tmp_path / "missing.safetensors")}
    with pytest.raises(ValueError, match=r"missing\.safetensors' does not exist"):
        build_registry(config, sheet)


def test_the_same_config_in_another_role_keeps_its_first_id():
    registry = Registry(check_files=False)
    cfg = {"model": {"arch": "test_convnext"}, "seed": 0}
    first = registry.add("e1", "test_convnext", "scratch", "intask", 0, cfg)
    assert registry.add("e2", "test_convnext", "scratch", "none", 0, dict(cfg)) == first
    assert registry.add("e2", "test_convnext", "scratch", "none", 0, dict(cfg)) == first  # a role is listed once
    assert list(registry.runs) == [first] and [r["exp"] for r in registry.manifest] == ["e1", "e2"]
    with pytest.raises(ValueError, match="registered twice with different configs"):
        registry.add("e1", "test_convnext", "scratch", "intask", 0, {**cfg, "method": "finetune"})


def test_a_run_starts_from_the_run_whose_folder_is_its_pretrained_model(workflow_config, sheet):
    registry = plan(workflow_config("smoke"), sheet)
    assert registry.starts_from("e1/test_convnext/adapt/intask/seed0") == "e1/test_convnext/fo_scratch/intask/seed0"
    assert registry.starts_from("e1/test_convnext/adapt/transfer/seed0") == (
        "pretrain/test_convnext/first_order/src10/seed0")
    assert registry.starts_from("e1/test_convnext/scratch/intask/seed0") is None  # from random init
    assert registry.starts_from("e9/no/such/run/seed0") is None


def test_a_high_order_peer_row_trains_from_scratch_only(workflow_config, sheet):
    """HorNet / GFNet / FocalNet rows (weights none): their E1 runs train the architecture from random init; a config
    that would adapt them is refused, naming the row and the column."""
    config = workflow_config("smoke")
    config["e1"]["backbones"] = ["test_convnext", "hornet_test"]
    config["e1"]["families"] = {"HorNet": {"methods": ["fo_scratch"], "settings": ["intask"]}}
    runs = plan(config, sheet).runs
    assert runs["e1/hornet_test/fo_scratch/intask/seed0"]["model"] == {"arch": "hornet_test", "pretrained": "none",
                                                                        "quadratic": False}
    assert not [rid for rid in runs if rid.startswith("e1/hornet_test/") and "fo_scratch" not in rid]
    config["e1"]["families"] = {}
    with pytest.raises(ValueError, match=r"row 'hornet_test', column weights: 'none' means trained from scratch only"):
        plan(config, sheet)
