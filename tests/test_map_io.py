"""SceneMap files (uniseg3d_ros.mapping.map_io): exact .npz round trips, .ply for viewers, atomic writes and
validation of every field on load, on maps fused from the ray-cast room of test_scene_map."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from tests.test_scene_map import build_room, fused, room_poses
from uniseg3d_ros.mapping.map_io import load_map, save_map
from uniseg3d_ros.mapping.scene_map import SceneMap

o3d = pytest.importorskip("open3d")


@pytest.fixture(scope="module")
def room():
    from tests.test_scene_map import K, render
    from uniseg3d_ros.mapping.rgbd import depth_to_points

    scene, rgbs = build_room()
    frames = []
    for pose in room_poses(4):
        depth, color = render(scene, rgbs, pose)
        pts, cols = depth_to_points(depth, color, K, max_depth=8.0)
        frames.append((pts, cols, pose))
    return scene, rgbs, frames


def test_npz_round_trip_is_exact(room, tmp_path: Path):
    _, _, frames = room
    m = fused(frames[:3], max_voxels=123_456, crop_min=[-1, -1, -1], crop_max=[5, 5, 5], max_range=7.5)
    save_map(m, tmp_path / "map.npz")
    loaded = load_map(tmp_path / "map.npz")
    a, b = m.snapshot(), loaded.snapshot()
    for k in ("keys", "points", "colors", "counts", "last_seen"):
        np.testing.assert_array_equal(getattr(a, k), getattr(b, k))
    assert (loaded.voxel_size, loaded.max_voxels, loaded.max_range) == (0.02, 123_456, 7.5)
    np.testing.assert_array_equal(loaded.crop_max, [5, 5, 5])
    assert loaded.version != m.version
    loaded.integrate(*frames[3][:2], frames[3][2])  # the restored hash table works
    assert int(loaded.snapshot().counts.sum()) == int(a.counts.sum()) + len(frames[3][0])
    assert [p.name for p in tmp_path.iterdir()] == ["map.npz"]


def test_ply_round_trip_keeps_geometry_and_counts(room, tmp_path: Path):
    _, _, frames = room
    m = fused(frames[:2])
    save_map(m, tmp_path / "map.ply")
    head = (tmp_path / "map.ply").read_bytes()[:400]
    assert b"property uchar red" in head and b"property int count" in head
    loaded = load_map(tmp_path / "map.ply")
    a, b = m.snapshot(), loaded.snapshot()
    ia, ib = np.argsort(a.keys), np.argsort(b.keys)
    np.testing.assert_array_equal(a.keys[ia], b.keys[ib])
    np.testing.assert_array_equal(a.counts[ia], b.counts[ib])
    np.testing.assert_allclose(a.points[ia], b.points[ib], atol=1e-6)
    np.testing.assert_allclose(a.colors[ia], b.colors[ib], atol=0.5 / 255 + 1e-6)


@pytest.mark.parametrize("suffix", [".npz", ".ply"])
def test_empty_map_round_trips(tmp_path: Path, suffix: str):
    save_map(SceneMap(), tmp_path / f"empty{suffix}")
    loaded = load_map(tmp_path / f"empty{suffix}")
    assert len(loaded) == 0 and loaded.snapshot().points.shape == (0, 3)


def test_plain_ply_from_another_tool_is_voxelized(tmp_path: Path):
    rng = np.random.default_rng(5)
    pts = rng.random((500, 3))
    pcd = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(pts))
    pcd.colors = o3d.utility.Vector3dVector(np.tile([0.2, 0.4, 0.6], (500, 1)))
    o3d.io.write_point_cloud(str(tmp_path / "scan.ply"), pcd)
    snap = load_map(tmp_path / "scan.ply", voxel_size=0.25).snapshot()
    assert len(snap) == len(np.unique(np.floor(pts / 0.25), axis=0)) and snap.counts.sum() == 500
    np.testing.assert_allclose(snap.colors, np.tile([0.2, 0.4, 0.6], (len(snap), 1)), atol=0.5 / 255)
    (tmp_path / "junk.ply").write_bytes(b"not a ply at all")
    with pytest.raises(ValueError, match="not a PLY"):
        load_map(tmp_path / "junk.ply")


def test_failed_save_keeps_the_previous_file(room, tmp_path: Path, monkeypatch):
    _, _, frames = room
    path = tmp_path / "map.npz"
    save_map(fused(frames[:1]), path)
    before = path.read_bytes()

    def crash(f, **arrays):
        f.write(b"PK\x03\x04 partial")
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", crash)
    with pytest.raises(OSError, match="disk full"):
        save_map(fused(frames[:2]), path)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["map.npz"]
    assert len(load_map(path)) > 0


def _write_npz(path: Path, **changes):
    m = SceneMap(voxel_size=0.1)
    m.integrate(np.random.default_rng(0).random((500, 3)), None, np.eye(4))
    save_map(m, path)
    data = dict(np.load(path))
    for k, v in changes.items():
        if v is None:
            del data[k]
        else:
            data[k] = v(data[k]) if callable(v) else v
    np.savez(path, **data)


@pytest.mark.parametrize(
    ("changes", "field"),
    [({"counts": None}, "counts"),
     ({"points": lambda a: a[:, :2]}, "points"),
     ({"colors": lambda a: a[:-1]}, "colors"),
     ({"counts": lambda a: a * 0}, "counts"),
     ({"points": lambda a: a + 0.5}, "points"),
     ({"keys": lambda a: np.full_like(a, a[0])}, "keys"),
     ({"voxel_size": np.array(-1.0)}, "voxel_size"),
     ({"format": np.array("something else")}, "format"),
     ({"last_seen": lambda a: a * np.nan}, "last_seen")],
)
def test_load_rejects_bad_fields_by_name(tmp_path: Path, changes, field):
    path = tmp_path / "bad.npz"
    _write_npz(path, **changes)
    with pytest.raises(ValueError, match=field):
        load_map(path)


def test_load_rejects_a_truncated_file(tmp_path: Path):
    path = tmp_path / "map.npz"
    _write_npz(path)
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(ValueError, match="npz"):
        load_map(path)


def test_save_and_clear_while_integrating(room, tmp_path: Path):
    import threading

    _, _, frames = room
    m = SceneMap()
    errors: list[BaseException] = []
    done = threading.Event()

    def writer():
        try:
            for rep in range(4):
                for i, (pts, cols, pose) in enumerate(frames):
                    m.integrate(pts, cols, pose, stamp=float(rep * 10 + i))
        except BaseException as e:  # noqa: BLE001 - reported by the main thread
            errors.append(e)
        finally:
            done.set()

    t = threading.Thread(target=writer)
    t.start()
    saves = 0
    while not done.is_set() or saves < 2:
        save_map(m, tmp_path / "live.npz")
        saves += 1
        load_map(tmp_path / "live.npz")  # every saved file is complete and passes validation
        if saves == 3:
            m.clear()
    t.join(timeout=120)
    assert not errors, errors
    assert sorted(p.name for p in tmp_path.iterdir()) == ["live.npz"]
    final = m.snapshot()
    assert len(np.unique(final.keys)) == len(final) and np.all(final.counts >= 1)
