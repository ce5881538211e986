"""The compiled fusion kernels (``SceneMap(backend="numba")``) and their numpy twin give bit-identical
maps: same voxels in the same rows, same means, counts and stamps, whatever the input dtypes, filters,
NaNs, negative coordinates, running-mean cap or eviction."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from uniseg3d_ros.mapping.fuse_kernel import HAVE_NUMBA
from uniseg3d_ros.mapping.scene_map import SceneMap

pytestmark = pytest.mark.skipif(not HAVE_NUMBA, reason="numba does not import")


def rotation(seed: int) -> np.ndarray:
    q = np.random.default_rng(seed).normal(size=4)
    w, x, y, z = q / np.linalg.norm(q)
    T = np.eye(4)
    T[:3, :3] = [
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ]
    T[:3, 3] = np.random.default_rng(seed + 1).uniform(-3, 3, 3)
    return T


def batches(kind: str, n: int = 20_000, frames: int = 5):
    """(points, colors, pose) batches: depth-image-like rows of nearby points with the quirks of ``kind``."""
    rng = np.random.default_rng(hash(kind) % 2**32)
    for f in range(frames):
        u, v = np.meshgrid(np.arange(200), np.arange(n // 200))
        pts = np.stack([(u - 100) * 0.004, (v - 50) * 0.004, 1.5 + 0.2 * np.sin(u / 17.0)], -1).reshape(-1, 3)
        pts = pts + rng.normal(0, 0.003, pts.shape)
        cols = rng.random(pts.shape)
        if kind == "float64":
            pts, cols = pts.astype(np.float64), cols.astype(np.float64)
        else:
            pts, cols = pts.astype(np.float32), cols.astype(np.float32)
        if kind == "uint8":
            cols = (cols * 255).astype(np.uint8)
        if kind == "nan":
            pts[rng.random(len(pts)) < 0.1] = np.nan
            cols[rng.random(len(pts)) < 0.1, 1] = np.nan
            cols[:50, 0] = 1.0005  # inside the accepted tolerance: clipped to 1
            cols[50:100, 2] = -0.0005
        if kind == "none":
            cols = None
        yield pts, cols, rotation(f)


KINDS = ["float32", "float64", "uint8", "nan", "none"]


def fuse(backend: str, kind: str, **kw) -> SceneMap:
    m = SceneMap(voxel_size=0.02, backend=backend, **kw)
    for i, (pts, cols, pose) in enumerate(batches(kind)):
        m.integrate(pts, cols, pose, stamp=float(i))
    return m


def assert_same(a: SceneMap, b: SceneMap) -> None:
    sa, sb = a.snapshot(), b.snapshot()
    assert len(sa) == len(sb) > 0
    for name in ("keys", "points", "colors", "counts", "last_seen"):
        np.testing.assert_array_equal(getattr(sa, name), getattr(sb, name), err_msg=name)


@pytest.mark.parametrize("kind", KINDS)
def test_numba_and_numpy_fuse_bit_identical_maps(kind):
    assert_same(fuse("numba", kind), fuse("numpy", kind))


@pytest.mark.parametrize(
    "kw",
    [
        {"max_range": 1.55},
        {"crop_min": [-10.0, -10.0, -10.0], "crop_max": [0.5, 10.0, 10.0]},
        {"max_weight": 3},
        {"max_voxels": 5_000, "evict_fraction": 0.1},
    ],
    ids=["max_range", "crop", "max_weight", "eviction"],
)
def test_filters_caps_and_eviction_agree(kw):
    assert_same(fuse("numba", "nan", **kw), fuse("numpy", "nan", **kw))


def test_negative_coordinates_floor_like_numpy():
    pts = np.array([[-0.0001, -0.02, -0.0200001], [0.0, 0.019999, -1e-9], [-0.04, 0.04, 0.0]], np.float32)
    a, b = SceneMap(0.02, backend="numba"), SceneMap(0.02, backend="numpy")
    a.integrate(pts, None)
    b.integrate(pts, None)
    assert_same(a, b)
    assert len(a) == 3


def test_points_beyond_the_extent_are_dropped_with_a_warning_by_both():
    pts = np.array([[0.0, 0.0, 0.0], [1e9, 0.0, 0.0], [0.1, 0.1, 0.1]], np.float32)
    maps = []
    for backend in ("numba", "numpy"):
        m = SceneMap(0.02, backend=backend)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            assert m.integrate(pts, None) == 2
        assert any("beyond the map extent" in str(w.message) for w in caught)
        maps.append(m)
    assert_same(*maps)


def test_batch_table_grows_past_its_size_hint():
    rng = np.random.default_rng(4)
    pts = rng.uniform(0, 4, (60_000, 3)).astype(np.float32)  # ~60k distinct voxels, hint starts at 0
    a, b = SceneMap(0.02, backend="numba"), SceneMap(0.02, backend="numpy")
    a.integrate(pts, None)
    b.integrate(pts, None)
    assert_same(a, b)


def test_unknown_backend_is_rejected():
    with pytest.raises(ValueError, match="backend"):
        SceneMap(backend="cuda")
