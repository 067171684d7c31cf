"""ImageNet-1K/21K folder readers on small fixture trees of tiny JPEGs written by PIL."""
from pathlib import Path

import pytest
import torch
from PIL import Image

from quadranet.data.imagenet import (ENV_VARS, IMAGENET_MEAN, IMAGENET_STD, ImageNetFolder, imagenet1k, imagenet21k,
                                     imagenet_transform)

WNIDS = ("n01440764", "n01443537", "n02085620")  # deliberately created out of order below


def make_tree(root: Path, wnids=WNIDS, per_split={"train": 3, "val": 2}) -> Path:
    """root/{train,val}/<wnid>/<wnid>_<i>.JPEG, 20x16 RGB; plus one PNG, one non-image and one hidden folder."""
    for split, n in per_split.items():
        for k, wnid in enumerate(reversed(wnids)):
            d = root / split / wnid
            d.mkdir(parents=True)
            for i in range(n):
                Image.new("RGB", (20, 16), (40 * k, 10 * i, 200)).save(d / f"{wnid}_{i}.JPEG", quality=90)
    Image.new("L", (12, 12), 128).save(root / "train" / wnids[0] / "grey.png")  # PNG, greyscale
    (root / "train" / wnids[0] / "README.txt").write_text("not an image")
    (root / "train" / ".ipynb_checkpoints").mkdir()
    return root


@pytest.fixture
def tree(tmp_path) -> Path:
    return make_tree(tmp_path / "imagenet")


def test_labels_sorted_and_shared(tree):
    train, val = ImageNetFolder(tree, "train", input_size=32), ImageNetFolder(tree, "val", input_size=32)
    assert train.classes == val.classes == sorted(WNIDS) and train.num_classes == 3
    assert train.class_to_idx == {w: i for i, w in enumerate(sorted(WNIDS))}
    assert len(train) == 3 * 3 + 1 and len(val) == 3 * 2  # the PNG counts, README.txt and hidden folders do not
    for ds in (train, val):
        assert ds.targets == [t for _, t in ds.samples]
        for path, target in ds.samples:
            assert Path(path).parent.name == ds.classes[target]
    assert sorted(Path(p).name for p, _ in train.samples)[0] == "grey.png"
    assert train.targets == sorted(train.targets)  # class by class, files sorted


def test_val_labels_from_train_folder(tree):
    (tree / "val" / WNIDS[0]).rename(tree / "elsewhere")  # val without the first class
    with pytest.raises(FileNotFoundError, match=f"missing or without images.*{WNIDS[0]}"):
        ImageNetFolder(tree, "val")
    (tree / "val" / "n09999999").mkdir()
    with pytest.raises(ValueError, match="n09999999"):  # a val class train does not have
        ImageNetFolder(tree, "val")


def test_default_eval_transform(tree):
    ds = ImageNetFolder(tree, "val", input_size=32)
    x, y = ds[0]
    assert isinstance(x, torch.Tensor) and x.shape == (3, 32, 32) and x.dtype == torch.float32
    assert y == 0
    assert x.mean().abs() < 3  # normalised by the ImageNet mean/std, not raw 0..255
    png = ImageNetFolder(tree, "train", augment=False, input_size=(3, 24, 24))
    grey = next(i for i, (p, _) in enumerate(png.samples) if p.endswith(".png"))
    assert png[grey][0].shape == (3, 24, 24)  # greyscale converted to RGB


def test_train_transform_and_timm_config(tree):
    torch.manual_seed(0)
    x, _ = ImageNetFolder(tree, "train", input_size=16)[1]
    assert x.shape == (3, 16, 16)
    cfg = {"input_size": (3, 20, 20), "interpolation": "bicubic", "mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5),
           "crop_pct": 0.95, "crop_mode": "center"}  # as timm.data.resolve_data_config gives
    assert ImageNetFolder(tree, "val", **cfg)[0][0].shape == (3, 20, 20)
    names = [type(t).__name__ for t in imagenet_transform(True, input_size=16).transforms]
    assert "ColorJitter" not in names and "RandomResizedCropAndInterpolation" in names
    jitter = imagenet_transform(True, input_size=16, color_jitter=0.4).transforms
    assert "ColorJitter" in [type(t).__name__ for t in jitter]


def test_custom_transform(tree):
    ds = ImageNetFolder(tree, "val", transform=lambda img: img.size)
    assert ds[0] == ((20, 16), 0)
    with pytest.raises(ValueError, match="input_size"):
        ImageNetFolder(tree, "val", transform=lambda img: img, input_size=32)


def test_extensions(tree):
    with pytest.raises(FileNotFoundError, match=r"2 class folder\(s\) missing or without images \(\.png\)"):
        ImageNetFolder(tree, "train", extensions=".png")  # one extension, not its characters; 1 class has a PNG
    assert len(ImageNetFolder(tree, "train", extensions=(".JPEG",), input_size=8)) == 9  # case-insensitive


def test_num_classes(tree):
    assert ImageNetFolder(tree, "train", num_classes=3, input_size=8).num_classes == 3
    with pytest.raises(ValueError, match="expected 1000 class folders.*found 3"):
        ImageNetFolder(tree, "train", num_classes=1000)


def test_missing_root_and_split(tmp_path, tree):
    with pytest.raises(FileNotFoundError, match=r"does not exist; expected .*/train/<wnid>/\*\.JPEG"):
        ImageNetFolder(tmp_path / "nowhere")
    (tree / "val").rename(tmp_path / "val-elsewhere")
    with pytest.raises(FileNotFoundError, match=r"split folder .*val does not exist; expected .*/val/<wnid>/"):
        ImageNetFolder(tree, "val")
    with pytest.raises(ValueError, match="'test'"):
        ImageNetFolder(tree, "test")


def test_flat_val_folder(tree):
    for d in (tree / "val").iterdir():
        for f in d.iterdir():
            f.rename(tree / "val" / f.name)
        d.rmdir()
    with pytest.raises(FileNotFoundError, match=r"no class folders in .*val .*sorted into <wnid> folders"):
        ImageNetFolder(tree, "val")


def test_empty_class_folder(tree):
    for f in (tree / "train" / WNIDS[2]).iterdir():
        f.unlink()
    (tree / "train" / WNIDS[2] / "notes.txt").write_text("no images here")
    with pytest.raises(FileNotFoundError, match=f"1 class folder.*without images.*{WNIDS[2]}"):
        ImageNetFolder(tree, "train")


def test_no_class_folders(tmp_path):
    (tmp_path / "empty" / "train").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="no class folders in .*train; expected"):
        ImageNetFolder(tmp_path / "empty")


def test_val_only_tree(tmp_path):
    root = tmp_path / "valonly"
    for w in ("n2", "n1"):
        (root / "val" / w).mkdir(parents=True)
        Image.new("RGB", (8, 8)).save(root / "val" / w / "a.jpg")
    ds = ImageNetFolder(root, "val", transform=lambda img: img)
    assert ds.classes == ["n1", "n2"] and ds.targets == [0, 1]  # labels from the split folder itself


@pytest.mark.parametrize("factory,variant", [(imagenet1k, "1k"), (imagenet21k, "21k")])
def test_env_var_roots(tree, tmp_path, monkeypatch, factory, variant):
    monkeypatch.delenv(ENV_VARS[variant], raising=False)
    with pytest.raises(ValueError, match=f"pass root= or set {ENV_VARS[variant]}.*<wnid>"):
        factory()
    monkeypatch.setenv(ENV_VARS[variant], str(tree))
    kwargs = {"num_classes": 3} if variant == "1k" else {}
    ds = factory(split="val", input_size=16, **kwargs)
    assert ds.root == tree and len(ds) == 6 and ds[0][0].shape == (3, 16, 16)
    with pytest.raises(FileNotFoundError, match="nowhere"):  # an explicit root wins over the variable
        factory(tmp_path / "nowhere")


def test_imagenet1k_requires_1000_classes(tree):
    with pytest.raises(ValueError, match="expected 1000 class folders"):
        imagenet1k(tree)
    assert imagenet21k(tree, input_size=8).num_classes == 3  # 21K accepts any count by default


def test_subsets_per_class_and_limit_are_seeded(tree):
    full = ImageNetFolder(tree, "train", input_size=8)
    one = ImageNetFolder(tree, "train", input_size=8, per_class=1, seed=3)
    assert one.targets == [0, 1, 2] and one.num_classes == 3 and set(one.samples) <= set(full.samples)
    assert one.samples == ImageNetFolder(tree, "train", input_size=8, per_class=1, seed=3).samples
    some = ImageNetFolder(tree, "train", input_size=8, limit=4, seed=0)
    assert len(some) == 4 and some.targets == sorted(some.targets) and some.num_classes == 3
    assert len(ImageNetFolder(tree, "train", input_size=8, limit=100)) == len(full)
    with pytest.raises(ValueError, match="per_class=0 must be a positive integer"):
        ImageNetFolder(tree, "train", per_class=0)


def test_shift_applies_to_pixels_before_normalisation(tree):
    from quadranet.data import make_shift

    plain = ImageNetFolder(tree, "val", input_size=16)
    assert torch.equal(ImageNetFolder(tree, "val", input_size=16, shift=make_shift("gamma", 0.0))[0][0], plain[0][0])
    grey = ImageNetFolder(tree, "val", input_size=16, shift=make_shift("contrast", 1.0))[0][0]  # every pixel 0.5
    mean, std = torch.tensor(IMAGENET_MEAN).view(3, 1, 1), torch.tensor(IMAGENET_STD).view(3, 1, 1)
    assert torch.allclose(grey, ((0.5 - mean) / std).expand(3, 16, 16), atol=1e-6)
    with pytest.raises(ValueError, match="shift"):
        ImageNetFolder(tree, "val", transform=lambda img: img, shift=make_shift("gamma", 0.5))


def test_run_config_subsets_and_shift_reach_the_imagenet_reader(tree):
    """data.train_per_class / train_limit / eval_limit / shift of a run config (E2's source subsets, E3's shifts)."""
    import timm

    from quadranet.classify.config import load_config
    from quadranet.classify.data import build_datasets

    common = ["data.dataset=imagenet21k", f"data.root={tree}", "data.resolution=16", "model.arch=test_convnext"]
    model = timm.create_model("test_convnext", num_classes=3)
    train, evals = build_datasets(load_config(overrides=common + ["data.train_per_class=2", "data.eval_limit=4",
                                                                  "data.shift=solarize", "data.shift_strength=1.0"]),
                                  model)
    assert train.targets == [0, 0, 1, 1, 2, 2] and len(evals) == 4
    assert train.transform.shift.name == evals.transform.shift.name == "solarize"
    train, evals = build_datasets(load_config(overrides=common + ["data.train_limit=5"]), model)
    assert len(train) == 5 and len(evals) == 6
