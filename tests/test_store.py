"""Synth sets on disk: round trip, checksums, and refusals that write nothing."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from taskcut.data import SynthDataset, iterate_batches, open_dataset, render, write_synth
from taskcut.errors import TaskcutError

from .conftest import COUNTS, SIZE


def test_written_set_reads_back_as_rendered(synth_dir: Path) -> None:
    ds = SynthDataset(synth_dir, "val")
    assert len(ds) == COUNTS["val"]
    item = ds[2]
    ref = render(3, "val", 2, *SIZE)
    assert set(item) == {"image", "seg", "normal", "depth", "keypoint", "edge"}
    assert item["seg"].dtype == torch.int64 and item["image"].dtype == torch.float32
    assert torch.equal(item["seg"], torch.from_numpy(ref["seg"]))
    np.testing.assert_allclose(item["image"].numpy(), ref["image"], atol=0.5 / 255 + 1e-7)
    np.testing.assert_allclose(item["depth"].numpy(), ref["depth"], rtol=1e-3)
    np.testing.assert_allclose(item["normal"].numpy(), ref["normal"], atol=1e-3)


def test_batches_are_dicts_keyed_by_task(synth_dir: Path) -> None:
    ds = open_dataset(f"synth:{synth_dir}", "train")
    batches = list(iterate_batches(ds, 5))
    assert [b["image"].shape[0] for b in batches] == [5, 5, 2]
    assert batches[0]["normal"].shape == (5, 3, *SIZE)
    assert batches[0]["seg"].shape == (5, *SIZE)


def test_missing_folder_and_missing_manifest(tmp_path: Path) -> None:
    with pytest.raises(TaskcutError, match="does not exist"):
        SynthDataset(tmp_path / "nope", "train")
    (tmp_path / "empty").mkdir()
    with pytest.raises(TaskcutError, match="no manifest.json"):
        SynthDataset(tmp_path / "empty", "train")


def _copy(src: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "copy"
    shutil.copytree(src, dst)
    return dst


def test_manifest_that_does_not_match_its_shards(synth_dir: Path, tmp_path: Path) -> None:
    root = _copy(synth_dir, tmp_path)
    manifest = json.loads((root / "manifest.json").read_text())
    manifest["splits"]["train"]["count"] += 1
    (root / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(TaskcutError, match="manifest says"):
        SynthDataset(root, "train")


def test_truncated_shard_is_caught_by_its_checksum(synth_dir: Path, tmp_path: Path) -> None:
    root = _copy(synth_dir, tmp_path)
    shard = root / "train-0000.npz"
    shard.write_bytes(shard.read_bytes()[:-100])
    with pytest.raises(TaskcutError, match="checksum"):
        SynthDataset(root, "train")


def test_a_split_read_again_is_not_hashed_again_but_a_changed_shard_is(synth_dir: Path, tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """A fleet opens one split dozens of times: it is read and checked once while its files stay as they
    were; a shard changed since (even to the same size) is checked again and refused."""
    from taskcut.data import store

    root = _copy(synth_dir, tmp_path)
    hashed: list[str] = []
    real = store.file_sha256
    monkeypatch.setattr(store, "file_sha256", lambda p: hashed.append(Path(p).name) or real(p))
    first = SynthDataset(root, "train")
    assert hashed == ["train-0000.npz"]
    second = SynthDataset(root, "train")
    assert hashed == ["train-0000.npz"]  # read once
    assert torch.equal(first.batch(torch.arange(3))["image"], second.batch(torch.arange(3))["image"])
    shard = root / "train-0000.npz"
    data = bytearray(shard.read_bytes())
    data[-50] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(TaskcutError, match="checksum"):
        SynthDataset(root, "train")
    assert hashed == ["train-0000.npz", "train-0000.npz"]
    data[-50] ^= 0xFF  # put back (a new time): read and checked again, and only its newest form is kept
    shard.write_bytes(bytes(data))
    SynthDataset(root, "train")
    assert hashed == ["train-0000.npz"] * 3
    assert len([k for k in store._SPLITS if k[:2] == (str(root.resolve()), "train")]) == 1


def test_deleted_shard_is_named(synth_dir: Path, tmp_path: Path) -> None:
    root = _copy(synth_dir, tmp_path)
    (root / "test-0000.npz").unlink()
    with pytest.raises(TaskcutError, match="test-0000.npz.*missing"):
        SynthDataset(root, "test")


def test_existing_folder_is_refused_and_kept(synth_dir: Path, tmp_path: Path) -> None:
    root = _copy(synth_dir, tmp_path)
    before = sorted((p.name, p.stat().st_size) for p in root.iterdir())
    with pytest.raises(TaskcutError, match="--force"):
        write_synth(root, {"train": 2}, (8, 8))
    assert sorted((p.name, p.stat().st_size) for p in root.iterdir()) == before
    write_synth(root, {"train": 2}, (8, 8), force=True)
    assert len(SynthDataset(root, "train")) == 2
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".") and not p.name.endswith(".lock")]


@pytest.mark.parametrize("size", [(0, 8), (8, -2)])
def test_bad_size_writes_nothing(tmp_path: Path, size: tuple[int, int]) -> None:
    with pytest.raises(TaskcutError, match="positive"):
        write_synth(tmp_path / "out", {"train": 2}, size)
    assert list(tmp_path.iterdir()) == []
