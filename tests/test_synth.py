"""The synth renderer: determinism, target formats, and geometry checked against the scene."""

from __future__ import annotations

import numpy as np
import pytest

from taskcut.data.synth import (CLASS_NAMES, IGNORE_INDEX, OBJECT_CLASSES, SynthOptions, _draw_scene, _soft,
                                render, scene_rng)


def test_same_seed_and_size_give_bit_identical_arrays() -> None:
    a = render(7, "train", 5, 40, 48)
    b = render(7, "train", 5, 40, 48)
    assert a.keys() == b.keys()
    for key in a:
        assert a[key].dtype == b[key].dtype
        assert a[key].tobytes() == b[key].tobytes(), key


def test_splits_and_indices_give_different_scenes() -> None:
    images = [render(0, split, i, 32, 32)["image"] for split in ("train", "val", "test") for i in range(4)]
    for i in range(len(images)):
        for j in range(i + 1, len(images)):
            assert not np.array_equal(images[i], images[j])


@pytest.mark.parametrize("size", [(64, 64), (17, 29), (96, 40)])
def test_shapes_dtypes_and_ranges(size: tuple[int, int]) -> None:
    h, w = size
    s = render(1, "val", 2, h, w)
    assert s["image"].shape == (3, h, w) and s["image"].dtype == np.float32
    assert s["seg"].shape == (h, w) and s["seg"].dtype == np.int64
    for key, ch in (("normal", 3), ("depth", 1), ("keypoint", 1), ("edge", 1)):
        assert s[key].shape == (ch, h, w) and s[key].dtype == np.float32
    assert 0.0 <= s["image"].min() and s["image"].max() <= 1.0
    assert set(np.unique(s["seg"])) <= set(range(len(CLASS_NAMES))) | {IGNORE_INDEX}
    np.testing.assert_allclose(np.linalg.norm(s["normal"], axis=0), 1.0, atol=1e-5)
    assert (s["depth"] > 0).all()
    for key in ("keypoint", "edge"):
        assert s[key].min() >= 0.0 and s[key].max() <= 1.0


def test_at_least_six_classes_with_all_object_shapes_over_a_few_scenes() -> None:
    seen = set()
    for i in range(20):
        seen |= set(np.unique(render(0, "train", i, 48, 48)["seg"]).tolist())
    assert len(CLASS_NAMES) >= 6
    assert set(OBJECT_CLASSES) <= seen
    assert {0, 1, 2} <= seen


def test_depth_and_normals_agree_with_the_scene_geometry() -> None:
    """Back-project each pixel with its depth: floor pixels lie on y=0, back-wall pixels on z=room depth."""
    seed, split, index, h, w = 4, "test", 9, 48, 64
    s = render(seed, split, index, h, w)
    scene = _draw_scene(scene_rng(seed, split, index), SynthOptions())
    focal = 0.5 * w / np.tan(0.5 * scene.fov)
    u = (np.arange(w) + 0.5 - 0.5 * w) / focal
    v = (np.arange(h) + 0.5 - 0.5 * h) / focal
    d = s["depth"][0].astype(np.float64)
    cam = np.stack([u[None, :] * d, v[:, None] * d, d], axis=-1)
    world = cam @ scene.rot.T + scene.camera
    floor = s["seg"] == 0
    back = s["seg"] == 1
    assert floor.sum() > 50 and back.sum() > 50
    np.testing.assert_allclose(world[floor][:, 1], 0.0, atol=1e-3)
    np.testing.assert_allclose(world[back][:, 2], scene.depth, atol=1e-3)
    floor_normal_cam = scene.rot.T @ np.array([0.0, 1.0, 0.0])
    np.testing.assert_allclose(s["normal"][:, floor].T, np.broadcast_to(floor_normal_cam, (floor.sum(), 3)), atol=1e-5)


def test_edges_lie_on_class_boundaries() -> None:
    s = render(2, "train", 0, 64, 64)
    seg = s["seg"]
    boundary = np.zeros_like(seg, dtype=bool)
    boundary[:, :-1] |= seg[:, :-1] != seg[:, 1:]
    boundary[:-1, :] |= seg[:-1, :] != seg[1:, :]
    assert (s["edge"][0][boundary] == 1.0).all()
    assert s["edge"][0].mean() < 0.6


def test_soft_map_is_a_gaussian_of_the_distance_to_the_nearest_mark() -> None:
    binary = np.zeros((21, 21))
    binary[10, 10] = 1.0
    soft = _soft(binary, 2.0)
    yy, xx = np.mgrid[:21, :21]
    expected = np.exp(-((yy - 10) ** 2 + (xx - 10) ** 2) / 8.0)
    inside = (np.abs(yy - 10) <= 6) & (np.abs(xx - 10) <= 6)
    np.testing.assert_allclose(soft[inside], expected[inside], rtol=1e-12)
    assert soft[10, 10] == 1.0


@pytest.mark.parametrize("h,w", [(0, 10), (10, -1)])
def test_non_positive_size_is_refused(h: int, w: int) -> None:
    with pytest.raises(ValueError, match="positive"):
        render(0, "train", 0, h, w)


def test_unknown_split_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown split"):
        render(0, "holdout", 0, 8, 8)
