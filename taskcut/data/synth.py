"""`synth`: procedurally rendered 3-D rooms with exact ground truth for five dense tasks.

Every image is ray cast in vectorised NumPy from a scene drawn from its own random
stream, seeded by (seed, split, index). That makes a scene a pure function of those three
numbers: the same seed and size give bit-identical arrays on any run, a split can be
regenerated lazily, and train/val/test are disjoint by construction because the split is
part of the seed sequence (their streams never coincide).

Conventions
-----------
* World: y up, floor at y = 0, back wall at z = room depth, side walls at x = +-half width;
  walls have no top (every ray that leaves the camera forward hits something).
* Camera frame: x right, y down, z forward (OpenCV). Ray directions are built with z = 1
  in the camera frame, so the ray parameter t at a hit *is* the z-depth.
* Normals are unit vectors in the camera frame, facing the camera.
* Shadows are not rendered: one ray per pixel keeps generation far above 200 images/s.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import numpy as np

#: Semantic classes: three room surfaces, then three object shapes.
CLASS_NAMES: Final[tuple[str, ...]] = ("floor", "back_wall", "side_wall", "sphere", "box", "cylinder")
SURFACE_CLASSES: Final[tuple[int, ...]] = (0, 1, 2)
OBJECT_CLASSES: Final[tuple[int, ...]] = (3, 4, 5)
IGNORE_INDEX: Final[int] = 255
TASKS: Final[tuple[str, ...]] = ("seg", "normal", "depth", "keypoint", "edge")
SPLITS: Final[dict[str, int]] = {"train": 0, "val": 1, "test": 2}

_SPHERE, _BOX, _CYLINDER = 3, 4, 5
_EPS = 1e-6


@dataclass(frozen=True)
class SynthOptions:
    """Rendering knobs that change the targets; stored in a data set's manifest.

    `soft_width` and `keypoint_width` are the standard deviations, in pixels at 64 px image
    height, of the soft edge and keypoint maps; they scale with the image height. A 1-2 px
    line cannot be predicted by a model whose output stride is 8, so the defaults are wide
    enough for one; isolated keypoints get wider blobs than edges, which come in lines.
    """

    soft_width: float = 2.0
    keypoint_width: float = 4.0
    min_objects: int = 2
    max_objects: int = 6
    noise: float = 0.01
    crease_degrees: float = 30.0

    def __post_init__(self) -> None:
        if self.soft_width <= 0 or self.keypoint_width <= 0:
            raise ValueError(f"soft widths must be positive, got {self.soft_width}, {self.keypoint_width}")
        if not 1 <= self.min_objects <= self.max_objects:
            raise ValueError(f"need 1 <= min_objects <= max_objects, got {self.min_objects}, {self.max_objects}")


def scene_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The random stream of one scene; the split is part of the seed, so splits never share a scene."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {sorted(SPLITS)}")
    if index < 0 or seed < 0:
        raise ValueError(f"seed and index must be non-negative, got seed={seed}, index={index}")
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, SPLITS[split], index])))


def render(seed: int, split: str, index: int, height: int, width: int,
           options: SynthOptions = SynthOptions()) -> dict[str, np.ndarray]:
    """Render scene (seed, split, index) at height x width.

    Returns float32 `image` (3,H,W) in [0,1], int64 `seg` (H,W), float32 `normal` (3,H,W),
    `depth` (1,H,W), `keypoint` (1,H,W) and `edge` (1,H,W) in [0,1].
    """
    if height <= 0 or width <= 0:
        raise ValueError(f"image size must be positive, got {height}x{width}")
    rng = scene_rng(seed, split, index)
    scene = _draw_scene(rng, options)
    return _Renderer(scene, height, width, options, rng).run()


# --------------------------------------------------------------------------- scene


@dataclass
class _Object:
    kind: int            # class id
    center: np.ndarray   # sphere: centre; box: centre; cylinder: centre of its base
    size: np.ndarray     # sphere: (r,); box: half extents (3,); cylinder: (r, height)
    yaw: float
    color: np.ndarray
    pattern: int         # 0 plain, 1 checker, 2 stripes
    pattern_scale: float


@dataclass
class _Scene:
    half_width: float
    depth: float
    camera: np.ndarray
    rot: np.ndarray      # camera-to-world rotation, columns = right, down, forward
    fov: float
    light: np.ndarray
    ambient: float
    surface_colors: np.ndarray  # (4,3) floor, back, left, right
    floor_tile: float
    objects: list[_Object]


def _yaw_matrix(yaw: float) -> np.ndarray:
    c, s = np.cos(yaw), np.sin(yaw)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def _draw_scene(rng: np.random.Generator, options: SynthOptions) -> _Scene:
    half_width = rng.uniform(2.6, 3.6)
    depth = rng.uniform(6.5, 8.5)
    camera = np.array([rng.uniform(-0.3, 0.3), rng.uniform(1.4, 1.8), rng.uniform(-0.2, 0.2)])
    pitch = np.deg2rad(rng.uniform(10.0, 18.0))
    yaw = np.deg2rad(rng.uniform(-6.0, 6.0))
    roll = np.deg2rad(rng.uniform(-2.0, 2.0))
    forward = np.array([np.sin(yaw) * np.cos(pitch), -np.sin(pitch), np.cos(yaw) * np.cos(pitch)])
    right = np.cross([0.0, 1.0, 0.0], forward)
    right /= np.linalg.norm(right)
    down = np.cross(right, forward)
    cr, sr = np.cos(roll), np.sin(roll)
    right, down = cr * right + sr * down, -sr * right + cr * down
    rot = np.stack([right, down, forward], axis=1)

    elevation = np.deg2rad(rng.uniform(30.0, 70.0))
    azimuth = rng.uniform(0.0, 2 * np.pi)
    light = np.array([np.cos(elevation) * np.cos(azimuth), np.sin(elevation), np.cos(elevation) * np.sin(azimuth)])

    objects: list[_Object] = []
    footprints: list[tuple[float, float, float]] = []
    wanted = int(rng.integers(options.min_objects, options.max_objects + 1))
    attempts = 0
    while len(objects) < wanted and attempts < 60:
        attempts += 1
        kind = int(rng.choice([_SPHERE, _BOX, _CYLINDER]))
        if kind == _SPHERE:
            r = rng.uniform(0.45, 0.9)
            size = np.array([r])
            radius = r
        elif kind == _BOX:
            size = np.array([rng.uniform(0.4, 0.85), rng.uniform(0.35, 0.9), rng.uniform(0.4, 0.85)])
            radius = float(np.hypot(size[0], size[2]))
        else:
            size = np.array([rng.uniform(0.35, 0.7), rng.uniform(0.8, 1.7)])
            radius = float(size[0])
        x = rng.uniform(-half_width + radius + 0.1, half_width - radius - 0.1)
        z = rng.uniform(1.8 + radius, depth - radius - 0.3)
        if any(np.hypot(x - fx, z - fz) < radius + fr + 0.05 for fx, fz, fr in footprints):
            continue
        footprints.append((x, z, radius))
        y = float(size[0]) if kind == _SPHERE else float(size[1]) if kind == _BOX else 0.0
        objects.append(_Object(
            kind=kind, center=np.array([x, y, z]), size=size, yaw=rng.uniform(0.0, np.pi),
            color=rng.uniform(0.15, 0.95, size=3), pattern=int(rng.integers(0, 3)),
            pattern_scale=rng.uniform(0.12, 0.3),
        ))
    return _Scene(
        half_width=half_width, depth=depth, camera=camera, rot=rot, fov=np.deg2rad(rng.uniform(58.0, 66.0)),
        light=light, ambient=rng.uniform(0.25, 0.45),
        surface_colors=rng.uniform(0.3, 0.9, size=(4, 3)), floor_tile=rng.uniform(0.4, 0.9), objects=objects,
    )


# --------------------------------------------------------------------------- rendering


class _Renderer:
    """One scene cast at one size; keeps the per-pixel nearest hit while primitives are added."""

    def __init__(self, scene: _Scene, height: int, width: int, options: SynthOptions,
                 rng: np.random.Generator) -> None:
        self.scene, self.h, self.w, self.options, self.rng = scene, height, width, options, rng
        self.focal = 0.5 * width / np.tan(0.5 * scene.fov)
        u = (np.arange(width) + 0.5 - 0.5 * width) / self.focal
        v = (np.arange(height) + 0.5 - 0.5 * height) / self.focal
        cam = np.empty((height * width, 3))
        cam[:, 0] = np.tile(u, height)
        cam[:, 1] = np.repeat(v, width)
        cam[:, 2] = 1.0
        self.dirs = cam @ scene.rot.T  # world directions, z_cam = 1 so t = depth
        n = height * width
        self.t = np.full(n, np.inf)
        self.normal = np.zeros((n, 3))
        self.instance = np.full(n, -1, dtype=np.int64)
        self.cls = np.full(n, IGNORE_INDEX, dtype=np.int64)
        self.albedo = np.zeros((n, 3))

    # -- primitives ---------------------------------------------------------------

    def _take(self, t: np.ndarray, inst: int, cls: int) -> np.ndarray:
        """Claim the pixels where t is the nearest hit so far; returns their indices."""
        idx = np.nonzero((t > _EPS) & (t < self.t))[0]
        self.t[idx] = t[idx]
        self.instance[idx] = inst
        self.cls[idx] = cls
        return idx

    def _planes(self) -> None:
        s, o, d = self.scene, self.scene.camera, self.dirs
        with np.errstate(divide="ignore", invalid="ignore"):
            planes = [
                (1, 0.0, 0, 0),                         # floor: y = 0
                (2, s.depth, 1, 1),                     # back wall: z = depth
                (0, -s.half_width, 2, 2),               # left wall
                (0, s.half_width, 2, 3),                # right wall
            ]
            for axis, offset, cls, inst in planes:
                t = (offset - o[axis]) / d[:, axis]
                t = np.where(np.isfinite(t), t, np.inf)
                idx = self._take(t, inst, cls)
                normal = np.zeros(3)
                normal[axis] = 1.0 if o[axis] > offset else -1.0
                self.normal[idx] = normal
                p = o + t[idx, None] * d[idx]
                self.albedo[idx] = s.surface_colors[inst] * self._surface_texture(inst, p)[:, None]

    def _surface_texture(self, inst: int, p: np.ndarray) -> np.ndarray:
        s = self.scene
        if inst == 0:  # chequered floor tiles
            checker = (np.floor(p[:, 0] / s.floor_tile) + np.floor(p[:, 2] / s.floor_tile)) % 2
            return 1.0 - 0.35 * checker
        coord = p[:, 0] if inst == 1 else p[:, 2]  # vertical wallpaper stripes
        return 1.0 - 0.12 * (np.floor(coord / 0.35) % 2)

    def _objects(self) -> None:
        o, d = self.scene.camera, self.dirs
        for k, obj in enumerate(self.scene.objects):
            inst = 4 + k
            if obj.kind == _SPHERE:
                t, normal = self._sphere(obj, o, d)
            elif obj.kind == _BOX:
                t, normal = self._box(obj, o, d)
            else:
                t, normal = self._cylinder(obj, o, d)
            idx = self._take(t, inst, obj.kind)
            self.normal[idx] = normal[idx]
            p = o + t[idx, None] * d[idx]
            local = (p - obj.center) @ _yaw_matrix(obj.yaw)
            self.albedo[idx] = obj.color * self._object_texture(obj, local)[:, None]

    @staticmethod
    def _object_texture(obj: _Object, local: np.ndarray) -> np.ndarray:
        if obj.pattern == 0:
            return np.ones(len(local))
        q = np.floor(local / obj.pattern_scale)
        if obj.pattern == 1:
            return 1.0 - 0.4 * (q.sum(axis=1) % 2)
        return 1.0 - 0.4 * (q[:, 1] % 2)

    @staticmethod
    def _sphere(obj: _Object, o: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        oc = o - obj.center
        a = np.einsum("ij,ij->i", d, d)
        b = 2.0 * d @ oc
        c = oc @ oc - obj.size[0] ** 2
        disc = b * b - 4 * a * c
        t = np.full(len(d), np.inf)
        hit = disc >= 0
        t[hit] = (-b[hit] - np.sqrt(disc[hit])) / (2 * a[hit])
        normal = (o + t[:, None] * d - obj.center) / obj.size[0]
        return t, np.where(hit[:, None], normal, 0.0)

    @staticmethod
    def _box(obj: _Object, o: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        rot = _yaw_matrix(obj.yaw)           # local-to-world
        lo = (o - obj.center) @ rot          # = rot.T @ (o - c)
        ld = d @ rot
        with np.errstate(divide="ignore", invalid="ignore"):
            t1 = (-obj.size - lo) / ld
            t2 = (obj.size - lo) / ld
        near = np.nan_to_num(np.minimum(t1, t2), nan=-np.inf)
        far = np.nan_to_num(np.maximum(t1, t2), nan=np.inf)
        axis = np.argmax(near, axis=1)
        t_near = near[np.arange(len(d)), axis]
        t_far = far.min(axis=1)
        hit = (t_far >= t_near) & (t_near > _EPS)
        t = np.where(hit, t_near, np.inf)
        local_normal = np.zeros_like(ld)
        rows = np.arange(len(d))
        local_normal[rows, axis] = -np.sign(ld[rows, axis])
        return t, local_normal @ rot.T

    @staticmethod
    def _cylinder(obj: _Object, o: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        r, height = obj.size
        ox, oz = o[0] - obj.center[0], o[2] - obj.center[2]
        a = d[:, 0] ** 2 + d[:, 2] ** 2
        b = 2 * (d[:, 0] * ox + d[:, 2] * oz)
        c = ox * ox + oz * oz - r * r
        disc = b * b - 4 * a * c
        t_side = np.full(len(d), np.inf)
        ok = disc >= 0
        t_side[ok] = (-b[ok] - np.sqrt(disc[ok])) / (2 * a[ok])
        y_side = o[1] + t_side * d[:, 1]
        t_side = np.where((y_side >= 0) & (y_side <= height), t_side, np.inf)
        with np.errstate(divide="ignore", invalid="ignore"):
            t_top = (height - o[1]) / d[:, 1]
        px = ox + t_top * d[:, 0]
        pz = oz + t_top * d[:, 2]
        t_top = np.where(np.isfinite(t_top) & (px * px + pz * pz <= r * r), t_top, np.inf)
        top = t_top < t_side
        t = np.minimum(t_side, t_top)
        side_normal = np.stack([(ox + t * d[:, 0]) / r, np.zeros(len(d)), (oz + t * d[:, 2]) / r], axis=1)
        normal = np.where(top[:, None], np.array([0.0, 1.0, 0.0]), side_normal)
        return t, np.where(np.isfinite(t)[:, None], normal, 0.0)

    # -- outputs ------------------------------------------------------------------

    def run(self) -> dict[str, np.ndarray]:
        self._planes()
        self._objects()
        h, w, s = self.h, self.w, self.scene
        shade = s.ambient + (1 - s.ambient) * np.clip(self.normal @ s.light, 0.0, None)
        image = self.albedo * shade[:, None]
        image = image + self.options.noise * self.rng.standard_normal(image.shape)
        image = np.clip(image, 0.0, 1.0).reshape(h, w, 3).transpose(2, 0, 1)
        normal_cam = (self.normal @ s.rot).reshape(h, w, 3).transpose(2, 0, 1)
        depth = self.t.reshape(h, w)
        seg = self.cls.reshape(h, w)
        edge = _soft(self._edges(normal_cam), self.options.soft_width * h / 64.0)
        keypoint = self._keypoints(depth, self.options.keypoint_width * h / 64.0)
        return {
            "image": image.astype(np.float32),
            "seg": seg,
            "normal": normal_cam.astype(np.float32),
            "depth": depth[None].astype(np.float32),
            "keypoint": keypoint[None].astype(np.float32),
            "edge": edge[None].astype(np.float32),
        }

    def _edges(self, normal: np.ndarray) -> np.ndarray:
        """Occlusion edges (instance changes) and creases (normal turns sharply) as a 0/1 map."""
        inst = self.instance.reshape(self.h, self.w)
        cos_crease = np.cos(np.deg2rad(self.options.crease_degrees))
        edge = np.zeros((self.h, self.w), dtype=bool)
        for axis in (0, 1):
            a = [slice(None)] * 2
            b = [slice(None)] * 2
            a[axis], b[axis] = slice(None, -1), slice(1, None)
            a, b = tuple(a), tuple(b)
            turn = (normal[(slice(None),) + a] * normal[(slice(None),) + b]).sum(axis=0) < cos_crease
            diff = (inst[a] != inst[b]) | turn
            edge[a] |= diff
        return edge.astype(np.float64)

    def _keypoints(self, depth: np.ndarray, sigma: float) -> np.ndarray:
        """Heat map of the visible corners of boxes and of the room's floor corners."""
        s = self.scene
        points = [np.array([[-s.half_width, 0.0, s.depth], [s.half_width, 0.0, s.depth]])]
        signs = np.array([[i, j, k] for i in (-1, 1) for j in (-1, 1) for k in (-1, 1)], dtype=float)
        for obj in s.objects:
            if obj.kind == _BOX:
                points.append(obj.center + (signs * obj.size) @ _yaw_matrix(obj.yaw).T)
        cam = (np.concatenate(points) - s.camera) @ s.rot  # camera-frame coordinates
        ys = np.arange(self.h) + 0.5
        xs = np.arange(self.w) + 0.5
        heat = np.zeros((self.h, self.w))
        for x, y, z in cam:
            if z <= _EPS:
                continue
            px = x / z * self.focal + 0.5 * self.w
            py = y / z * self.focal + 0.5 * self.h
            i, j = int(np.floor(py)), int(np.floor(px))
            if not (0 <= i < self.h and 0 <= j < self.w) or depth[i, j] < z * 0.97:
                continue  # outside the picture, or hidden behind something nearer
            gy = np.exp(-((ys - py) ** 2) / (2 * sigma * sigma))
            gx = np.exp(-((xs - px) ** 2) / (2 * sigma * sigma))
            np.maximum(heat, gy[:, None] * gx[None, :], out=heat)
        return heat


def _soft(binary: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian max-filter: each pixel gets exp(-d^2 / 2 sigma^2) for its nearest marked pixel.

    A Gaussian factorises over axes, so the 2-D max-filter is two 1-D passes. Peaks stay 1
    (unlike a blur), so the map is in [0,1] whatever the line density.
    """
    radius = max(1, int(np.ceil(3 * sigma)))
    out = binary
    for axis in (0, 1):
        acc = out.copy()
        n = out.shape[axis]
        for k in range(1, min(radius, n - 1) + 1):
            wgt = np.exp(-k * k / (2 * sigma * sigma))
            lo = [slice(None)] * 2
            hi = [slice(None)] * 2
            lo[axis], hi[axis] = slice(None, n - k), slice(k, None)
            np.maximum(acc[tuple(lo)], wgt * out[tuple(hi)], out=acc[tuple(lo)])
            np.maximum(acc[tuple(hi)], wgt * out[tuple(lo)], out=acc[tuple(hi)])
        out = acc
    return out
