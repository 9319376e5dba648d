"""NYU-v2, Cityscapes and Tiny-Taskonomy loaders on fixtures in the papers' layouts, end to end through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from typer.testing import CliRunner

from taskcut.cli import app
from taskcut.data.dataset import item_rngs, iterate_batches, open_dataset, open_for_tasks, with_class_weights
from taskcut.data.indexed import BGR_MEAN
from taskcut.errors import TaskcutError
from taskcut.tasks.dense import TaskSpec
from taskcut.tasks.maps import valid_mask

from .layouts import H, W, write_cityscapes, write_nyuv2, write_taskonomy

runner = CliRunner()
COUNTS = {"train": 4, "val": 2, "test": 2}


@pytest.fixture(scope="module")
def sets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("real")
    return {"nyuv2": write_nyuv2(root / "nyu", {"train": 5, "test": 2}),  # no val split, as AdaShare's NYU-v2
            "cityscapes": write_cityscapes(root / "city", COUNTS),
            "taskonomy": write_taskonomy(root / "tasko", COUNTS)}


def _bgr(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))[..., ::-1].astype(np.float32)


def test_nyuv2_tensors_ignore_labels_and_masks(sets: dict[str, Path]) -> None:
    root = sets["nyuv2"]
    ds = open_dataset(f"nyuv2:{root}", "test")
    item = ds[0]
    group = json.loads((root / "nyu_v2_3task.json").read_text())["test"][0]
    expected_image = torch.from_numpy(_bgr(root / group[0]) - BGR_MEAN).permute(2, 0, 1)
    assert torch.allclose(item["image"], expected_image)
    seg = np.asarray(Image.open(root / group[1]))
    assert torch.equal(item["seg"], torch.from_numpy(seg.astype(np.int64)))
    assert (item["seg"][:3] == 255).all() and item["seg"][3:].max() < 40
    raw = _bgr(root / group[2])
    valid = valid_mask("normal", item["normal"][None])[0, 0]
    assert not valid[:, :2].any() and valid[:, 2:].all()  # a 255 channel marks an invalid normal
    unit = raw[5, 5] / np.linalg.norm(raw[5, 5])  # the papers normalise the stored bytes as they are
    assert np.allclose(item["normal"][:, 5, 5].numpy(), unit, atol=1e-6)
    depth = item["depth"][0]
    assert (depth[-2:] == 0).all() and (depth[:-2] > 0).all()
    assert torch.allclose(depth, torch.from_numpy(np.load(root / group[3])))


def test_nyuv2_without_val_carves_it_out_of_train(sets: dict[str, Path]) -> None:
    data = f"nyuv2:{sets['nyuv2']}"
    index = json.loads((sets["nyuv2"] / "nyu_v2_3task.json").read_text())
    train, val, test = (open_dataset(data, s) for s in ("train", "val", "test"))
    assert val.index_split.startswith("train (val carved: 1 of 5")
    assert len(val) == 1 and len(train) == 4
    assert sorted(train.groups + val.groups) == sorted(index["train"])  # disjoint, nothing lost
    assert not set(map(tuple, val.groups)) & set(map(tuple, test.groups))
    again = open_dataset(data, "val")
    assert again.groups == val.groups  # seeded
    half = open_dataset(data + "?val_fraction=0.5&val_seed=3", "val")
    assert len(half) == 2


def test_validating_on_test_needs_the_explicit_option_and_warns(sets: dict[str, Path],
                                                                 capsys: pytest.CaptureFixture) -> None:
    data = f"nyuv2:{sets['nyuv2']}"
    val, test = open_dataset(data + "?val=test", "val"), open_dataset(data, "test")
    assert val.index_split == "test" and val.groups == test.groups
    assert "chosen on the test split" in capsys.readouterr().err
    assert len(open_dataset(data + "?val=test", "train")) == 5  # nothing carved then
    for bad, match in (("?val=tset", "carve.*or test"), ("?val_fraction=1.5", r"\(0, 1\)"), ("?foo=1", "unknown"),
                       ("?val_seed=x", "not a number")):
        with pytest.raises(TaskcutError, match=match):
            open_dataset(data + bad, "val")


def test_no_checkpoint_is_chosen_on_test_without_the_option(sets: dict[str, Path], tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """Every validation pass of training and fine-tuning on NYU-v2 (no val) sees train images only."""
    import taskcut.train.fit as fit_module

    test_groups = {tuple(g) for g in json.loads((sets["nyuv2"] / "nyu_v2_3task.json").read_text())["test"]}
    seen: list[set[tuple[str, ...]]] = []
    original = fit_module.weighted_loss

    def spy(model, dataset, *args, **kwargs):
        seen.append({tuple(g) for g in dataset.groups})
        return original(model, dataset, *args, **kwargs)

    monkeypatch.setattr(fit_module, "weighted_loss", spy)
    base = tmp_path / "base.safetensors"
    for data, expect_test in ((f"nyuv2:{sets['nyuv2']}", False), (f"nyuv2:{sets['nyuv2']}?val=test", True)):
        seen.clear()
        result = runner.invoke(app, ["train", "--config", str(_config(tmp_path, "nyuv2")), "--data", data, "--out",
                                     str(base), "--quiet", "--force"])
        assert result.exit_code == 0, result.output
        assert seen and all(bool(s & test_groups) == expect_test for s in seen)
        provenance = json.loads(safe_open_meta(base))["provenance"]
        assert provenance["data"] == data and ("test" in provenance["validation"]) == expect_test


def test_cityscapes_label_sets_and_ignore(sets: dict[str, Path]) -> None:
    root = sets["cityscapes"]
    group = json.loads((root / "cityscape.json").read_text())["train"][1]
    for classes, column in ((2, 2), (7, 3), (19, 4)):
        ds = open_dataset(f"cityscapes:{root}", "train", seg_classes=classes)
        item = ds[1]  # no generator: no augmentation
        label = np.load(root / group[column]).astype(np.int64)
        label[label < 0] = 255
        assert torch.equal(item["seg"], torch.from_numpy(label))
        assert len(ds.classes) == classes
    rgb = np.load(root / group[0])
    expected = torch.from_numpy(rgb[..., ::-1] * 255.0 - BGR_MEAN).permute(2, 0, 1).float()
    assert torch.allclose(item["image"], expected, atol=1e-4)
    assert (item["depth"][0, :2] == 0).all() and (item["depth"][0, 2:] > 0).all()
    with pytest.raises(TaskcutError, match="2-, 7- and 19-class"):
        open_dataset(f"cityscapes:{root}", "train", seg_classes=5)


def test_taskonomy_conventions(sets: dict[str, Path]) -> None:
    root = sets["taskonomy"]
    ds = open_dataset(f"taskonomy:{root}", "test")
    item = ds[0]
    group = json.loads((root / "taskonomy.json").read_text())["test"][0]
    assert item["image"].shape == (3, 256, 256)  # the loader's fixed size
    seg = np.asarray(Image.open(root / group[1])).astype(np.int64)
    up = np.repeat(np.repeat(seg, 4, axis=0), 4, axis=1)  # 64 -> 256 by nearest neighbour
    assert torch.equal(item["seg"], torch.from_numpy(np.maximum(up, 1) - 1))
    assert item["seg"].max() <= 16
    raw_depth = np.repeat(np.repeat(np.asarray(Image.open(root / group[3])).astype(np.float64), 4, 0), 4, 1)
    invalid = raw_depth >= 64500
    depth = item["depth"][0].numpy()
    assert (depth[invalid] == 0).all()
    assert np.allclose(depth[~invalid], np.log1p(raw_depth[~invalid]) / np.log(2 ** 16), atol=1e-6)
    assert (item["normal"][:, invalid] == 0).all()  # normals share the depth mask
    assert item["normal"].min() >= -1 and item["normal"].max() <= 1
    kp = np.repeat(np.repeat(np.asarray(Image.open(root / group[4])).astype(np.float64), 4, 0), 4, 1) / 2 ** 16
    assert np.allclose(item["keypoint"][0].numpy(), np.clip(kp, 0, 0.005) / 0.005 * 2 - 1, atol=1e-5)
    weights = np.load(root / "semseg_prior_factor.npy")
    specs = with_class_weights({"seg": TaskSpec("seg", "segmentation", 17)}, ds)
    assert specs["seg"].class_weights == pytest.approx(tuple(weights))


def test_taskonomy_weighted_loss_uses_the_prior(sets: dict[str, Path]) -> None:
    ds = open_dataset(f"taskonomy:{sets['taskonomy']}", "test")
    batch = ds.batch(torch.tensor([0]))
    logits = torch.randn(1, 17, 8, 8)
    plain = TaskSpec("seg", "segmentation", 17)
    weighted = with_class_weights({"seg": plain}, ds)["seg"]
    target = batch["seg"]
    expected = torch.nn.functional.cross_entropy(
        torch.nn.functional.interpolate(logits, size=(256, 256), mode="bilinear", align_corners=False), target,
        weight=torch.tensor(weighted.class_weights, dtype=torch.float32))
    assert torch.allclose(weighted.loss(logits, target), expected)
    assert not torch.allclose(plain.loss(logits, target), expected)


@pytest.mark.parametrize("kind", ["nyuv2", "cityscapes", "taskonomy"])
def test_training_augmentation(sets: dict[str, Path], kind: str) -> None:
    ds = open_dataset(f"{kind}:{sets[kind]}", "train", crop=(48, 56))
    first = ds.batch(torch.tensor([0, 1]), item_rngs(7, range(2)))
    again = ds.batch(torch.tensor([0, 1]), item_rngs(7, range(2)))
    other = ds.batch(torch.tensor([0, 1]), item_rngs(8, range(2)))
    alone = ds.batch(torch.tensor([1]), item_rngs(7, [1]))  # item 1 in place 1, loaded alone (another rank)
    assert torch.equal(alone["image"][0], first["image"][1])
    assert first["image"].shape == (2, 3, 48, 56)
    assert all(torch.equal(first[k].nan_to_num(-9), again[k].nan_to_num(-9)) for k in first)  # a function of the rng
    assert not torch.equal(first["image"], other["image"])
    plain = ds.batch(torch.tensor([0, 1]))  # no generator: as stored
    assert plain["image"].shape[-2:] != (48, 56)
    # padded pixels: image at minus the mean, every target invalid
    pad = (first["image"] == torch.from_numpy(-BGR_MEAN).view(1, 3, 1, 1)).all(dim=1)
    if pad.any():
        assert (first["seg"][pad] == 255).all()
        assert not valid_mask("depth", first["depth"])[:, 0][pad].any()


def test_taskonomy_mirror_negates_normal_x(sets: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    from taskcut.data import augment as aug

    ds = open_dataset(f"taskonomy:{sets['taskonomy']}", "train", crop=(256, 256))
    item = ds.read_item([ds.root / p for p in ds.groups[0]])

    class Fixed:  # scale exactly 1, always mirror, no offset
        def uniform(self, lo, hi):
            return 1.0

        def random(self):
            return 1.0

        def integers(self, lo, hi):
            return 0

    out = aug.augment(item, ds.augmentation, Fixed())
    assert np.array_equal(out["normal"][..., 0], -item["normal"][:, ::-1, 0])
    assert np.array_equal(out["normal"][..., 1], item["normal"][:, ::-1, 1])
    assert np.array_equal(out["seg"], item["seg"][:, ::-1])


def _config(tmp: Path, kind: str) -> Path:
    tasks = {
        "nyuv2": {"seg": {"kind": "segmentation", "channels": 40}, "normal": {"kind": "normal", "channels": 3},
                  "depth": {"kind": "depth", "channels": 1}},
        "cityscapes": {"seg": {"kind": "segmentation", "channels": 7}, "depth": {"kind": "depth", "channels": 1}},
        "taskonomy": {"seg": {"kind": "segmentation", "channels": 17}, "normal": {"kind": "normal", "channels": 3},
                      "depth": {"kind": "depth", "channels": 1}, "keypoint": {"kind": "keypoint", "channels": 1},
                      "edge": {"kind": "edge", "channels": 1}},
    }[kind]
    cfg = {"name": f"tiny-{kind}",
           "model": {"depth": 18, "width": 0.125, "head_hidden": 8, "head_dilations": [1, 2], "dropout": 0.0,
                     "tasks": tasks},
           "data": {"dataset": kind, "size": [32, 32]},
           "train": {"steps": 2, "batch_size": 2, "val_every": 2, "lr": 1e-3},
           "finetune": {"steps": 2, "batch_size": 2, "val_every": 1, "lr": 1e-4}}
    path = tmp / f"{kind}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.mark.parametrize("kind", ["nyuv2", "cityscapes", "taskonomy"])
def test_train_prune_finetune_evaluate_end_to_end(sets: dict[str, Path], tmp_path: Path, kind: str) -> None:
    data = f"{kind}:{sets[kind]}"
    base, small, tuned = tmp_path / "base.safetensors", tmp_path / "small.safetensors", tmp_path / "tuned.safetensors"
    result = runner.invoke(app, ["train", "--config", str(_config(tmp_path, kind)), "--data", data, "--out", str(base),
                                 "--quiet"])
    assert result.exit_code == 0, result.output
    report = json.loads(base.with_name("base.metrics.json").read_text())
    assert set(report["test"]) == set(open_dataset(data, "test").tasks)
    result = runner.invoke(app, ["prune", str(base), "--tasks", "seg,depth", "--sparsity", "0.5", "--data", data,
                                 "--batches", "2", "--batch-size", "2", "--out", str(small), "--quiet"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["finetune", str(small), "--data", data, "--config", str(_config(tmp_path, kind)),
                                 "--out", str(tuned), "--quiet"])
    assert result.exit_code == 0, result.output
    for convention in ("standard", "adashare"):
        out = tmp_path / f"eval-{convention}.json"
        result = runner.invoke(app, ["evaluate", str(tuned), "--data", data, "--baseline", str(base),
                                     "--metrics", convention, "--out", str(out)])
        assert result.exit_code == 0, result.output
        evaluation = json.loads(out.read_text())
        assert evaluation["convention"] == convention and set(evaluation["metrics"]) == {"seg", "depth"}
        assert np.isfinite(evaluation["metrics"]["seg"]["pixel_acc"])


def test_adashare_convention_differs_where_the_papers_do() -> None:
    spec = TaskSpec("depth", "depth", 1)
    standard, paper = spec.accumulator("standard"), spec.accumulator("adashare")
    # two batches of different sizes and different numbers of valid pixels
    t1 = torch.ones(1, 1, 2, 2)
    t2 = torch.ones(3, 1, 2, 2)
    t2[:, :, 0] = 0  # half invalid
    p1, p2 = torch.full_like(t1, 2.0), torch.full_like(t2, 1.5)
    for acc in (standard, paper):
        acc.update(p1, t1)
        acc.update(p2, t2)
    # standard: pixel-level, (4*1 + 6*0.5) / 10; adashare: per-batch means weighted by batch size, (1*1 + 3*0.5) / 4
    assert standard.compute()["abs_err"] == pytest.approx(0.7)
    assert paper.compute()["abs_err"] == pytest.approx(0.625)
    seg = TaskSpec("seg", "segmentation", 3)
    s_std, s_pap = seg.accumulator("standard"), seg.accumulator("adashare")
    target = torch.tensor([[[0, 0, 1, 2]]])
    pred = torch.tensor([[[0, 1, 0, 0]]])  # class 0: TP 1; classes 1, 2: no TP
    for acc in (s_std, s_pap):
        acc.update(pred, target)
    assert s_pap.compute()["miou"] == pytest.approx(0.25)  # only class 0 (IoU 1/4) counts
    assert s_std.compute()["miou"] == pytest.approx(0.25 / 3)
    with pytest.raises(ValueError, match="convention"):
        seg.accumulator("papers")


def test_missing_index_file_is_a_clear_error_and_nothing_is_written(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    out = tmp_path / "base.safetensors"
    result = runner.invoke(app, ["train", "--config", str(_config(tmp_path, "nyuv2")), "--data",
                                 f"nyuv2:{tmp_path / 'empty'}", "--out", str(out), "--quiet"])
    assert result.exit_code == 2
    assert "no index file nyu_v2_3task.json" in result.output
    assert not out.exists() and not out.with_name("base.metrics.json").exists()


def test_index_naming_missing_files_names_the_first_and_the_count(sets: dict[str, Path], tmp_path: Path) -> None:
    import shutil

    root = tmp_path / "city"
    shutil.copytree(sets["cityscapes"], root)
    group = json.loads((root / "cityscape.json").read_text())["train"]
    (root / group[1][1]).unlink()
    (root / group[2][3]).unlink()
    with pytest.raises(TaskcutError) as err:
        open_dataset(f"cityscapes:{root}", "train")
    assert "2 missing file(s)" in str(err.value) and str(root / group[1][1]) in str(err.value)


def test_bad_index_contents(tmp_path: Path) -> None:
    root = tmp_path / "t"
    root.mkdir()
    (root / "taskonomy.json").write_text("{not json")
    with pytest.raises(TaskcutError, match="not valid JSON"):
        open_dataset(f"taskonomy:{root}", "train")
    (root / "taskonomy.json").write_text(json.dumps({"train": [["a.png", "b.png"]]}))
    with pytest.raises(TaskcutError, match="list of 6 file paths"):
        open_dataset(f"taskonomy:{root}", "train")
    (root / "taskonomy.json").write_text(json.dumps({"train": [["a.png"] * 6]}))
    with pytest.raises(TaskcutError, match="no 'test' split"):
        open_dataset(f"taskonomy:{root}", "test")
    with pytest.raises(TaskcutError, match="unknown data kind"):
        open_dataset(f"kitti:{root}", "test")


def test_model_and_data_must_agree(sets: dict[str, Path]) -> None:
    with pytest.raises(TaskcutError, match="no targets for task"):
        open_for_tasks(f"cityscapes:{sets['cityscapes']}", "test", {"normal": TaskSpec("normal", "normal", 3)})
    with pytest.raises(TaskcutError, match="13 classes"):
        open_for_tasks(f"nyuv2:{sets['nyuv2']}", "test", {"seg": TaskSpec("seg", "segmentation", 13)})


def test_images_of_wrong_shape_are_named(sets: dict[str, Path], tmp_path: Path) -> None:
    import shutil

    root = tmp_path / "nyu"
    shutil.copytree(sets["nyuv2"], root)
    group = json.loads((root / "nyu_v2_3task.json").read_text())["test"]
    Image.fromarray(np.zeros((H + 4, W, 3), dtype=np.uint8)).save(root / group[1][0])
    ds = open_dataset(f"nyuv2:{root}", "test")
    with pytest.raises(TaskcutError, match=str(root / group[1][0]).replace("\\", "\\\\")):
        next(iterate_batches(ds, 2))
    Image.fromarray(np.zeros((H, W), dtype=np.uint8)).save(root / group[0][0])  # grey image for a colour one
    with pytest.raises(TaskcutError, match="expected a 3-channel RGB image, got mode L"):
        ds.batch(torch.tensor([0]))
    (root / group[0][0]).write_bytes(b"\x89PNG truncated")
    with pytest.raises(TaskcutError, match="cannot read the image"):
        ds.batch(torch.tensor([0]))
    (root / group[1][3]).write_bytes(b"\x93NUMPY garbage")
    with pytest.raises(TaskcutError, match=r"depth/test1\.npy"):
        ds.batch(torch.tensor([1]))


def safe_open_meta(path: Path) -> str:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return f.metadata()["taskcut"]
