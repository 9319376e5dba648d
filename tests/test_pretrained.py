"""The shipped pre-trained base model: present, intact, loadable as data, and saying how it was made."""

from __future__ import annotations

import pytest

import taskcut
from taskcut.errors import TaskcutError
from taskcut.fileio import file_sha256
from taskcut.models import read_spec
from taskcut.models import pretrained as pretrained_module
from taskcut.models.pretrained import PRETRAINED, pretrained_path


def test_the_shipped_base_model_is_intact_and_says_how_it_was_made() -> None:
    path = pretrained_path("synth-tiny")
    assert file_sha256(path) == PRETRAINED["synth-tiny"]["sha256"]
    provenance = read_spec(path)["provenance"]
    assert provenance["command"] == "taskcut train --preset synth-tiny" and provenance["seed"] == 0
    assert provenance["training_data"]["seed"] == 0 and provenance["training_data"]["train"] == 1500
    assert set(provenance["test"]) == {"seg", "normal", "depth", "keypoint", "edge"}
    model = taskcut.load(path)  # a zoo file: no code named, no trust needed
    assert model.tasks == ["seg", "normal", "depth", "keypoint", "edge"]


def test_a_replaced_file_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(pretrained_module.PRETRAINED, "synth-tiny", {**PRETRAINED["synth-tiny"], "sha256": "0" * 64})
    with pytest.raises(TaskcutError, match="damaged or was replaced"):
        pretrained_path("synth-tiny")
    with pytest.raises(TaskcutError, match="no pre-trained model"):
        pretrained_path("resnet-9000")
