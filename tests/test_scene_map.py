"""SceneMap on real generated data: an Open3D mesh room rendered with RaycastingScene, back-projected
with uniseg3d_ros.mapping.rgbd, fused; plus eviction, crop/range, versions, concurrency, the hash table."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from uniseg3d_ros.mapping.rgbd import depth_to_points
from uniseg3d_ros.mapping.scene_map import MapSnapshot, SceneMap, transform_points
from uniseg3d_ros.mapping.voxel_hash import unpack_keys

o3d = pytest.importorskip("open3d")

K = np.array([[120.0, 0.0, 79.5], [0.0, 120.0, 59.5], [0.0, 0.0, 1.0]])
W, H = 160, 120
# (min corner, size, rgb) of the objects standing in a 4 x 3 x 2.5 m room
BOXES = [
    ((0.5, 0.4, 0.0), (0.6, 0.5, 0.8), (0.85, 0.15, 0.10)),
    ((2.4, 1.6, 0.0), (0.9, 0.7, 0.7), (0.10, 0.20, 0.85)),
    ((1.6, 0.3, 0.0), (0.4, 0.4, 1.2), (0.10, 0.75, 0.20)),
]
ROOM = (4.0, 3.0, 2.5)
WALL_RGB = (0.8, 0.8, 0.75)


def build_room() -> tuple[o3d.t.geometry.RaycastingScene, np.ndarray]:
    """Raycasting scene of a closed room box plus BOXES; returns (scene, per-geometry rgb (G, 3))."""
    scene = o3d.t.geometry.RaycastingScene()
    meshes = [(o3d.geometry.TriangleMesh.create_box(*ROOM), WALL_RGB)]
    for corner, size, rgb in BOXES:
        m = o3d.geometry.TriangleMesh.create_box(*size)
        m.translate(corner)
        meshes.append((m, rgb))
    rgbs = []
    for m, rgb in meshes:
        scene.add_triangles(o3d.t.geometry.TriangleMesh.from_legacy(m))
        rgbs.append(rgb)
    return scene, np.asarray(rgbs, dtype=np.float32)


def look_at(eye, target) -> np.ndarray:
    """4x4 camera optical frame (x right, y down, z forward) -> world (z up) pose."""
    f = np.asarray(target, float) - np.asarray(eye, float)
    f /= np.linalg.norm(f)
    r = np.cross(f, [0.0, 0.0, 1.0])
    r /= np.linalg.norm(r)
    d = np.cross(f, r)
    T = np.eye(4)
    T[:3, :3] = np.stack([r, d, f], axis=1)
    T[:3, 3] = eye
    return T


def room_poses(n: int = 8) -> list[np.ndarray]:
    """Cameras circling the room centre at 1.4 m height, looking outwards and slightly down."""
    poses = []
    for i in range(n):
        a = 2 * np.pi * i / n
        eye = np.array([2.0 + 0.3 * np.cos(a), 1.5 + 0.3 * np.sin(a), 1.4])
        poses.append(look_at(eye, eye + np.array([np.cos(a), np.sin(a), -0.45])))
    return poses


def render(scene, rgbs: np.ndarray, pose: np.ndarray, K: np.ndarray = K, width: int = W, height: int = H):
    """Ray-cast a uint16-mm depth image and an RGB8 image (pixel centres at integer u, v as ROS)."""
    k = K.copy()
    k[0, 2] += 0.5  # Open3D samples pixel u at u + 0.5; shift so ray u goes through (u - cx) / fx
    k[1, 2] += 0.5
    rays = o3d.t.geometry.RaycastingScene.create_rays_pinhole(
        o3d.core.Tensor(k), o3d.core.Tensor(np.linalg.inv(pose)), width, height)
    ans = scene.cast_rays(rays)
    t = ans["t_hit"].numpy()  # ray directions have z = 1 in the camera, so t_hit is the z depth
    geom = ans["geometry_ids"].numpy()
    hit = np.isfinite(t)
    depth = np.where(hit, np.rint(t * 1000.0), 0).astype(np.uint16)
    color = np.zeros((height, width, 3), np.uint8)
    color[hit] = np.rint(rgbs[geom[hit]] * 255).astype(np.uint8)
    return depth, color


@pytest.fixture(scope="module")
def room():
    scene, rgbs = build_room()
    frames = []
    for pose in room_poses():
        depth, color = render(scene, rgbs, pose)
        pts, cols = depth_to_points(depth, color, K, max_depth=8.0)
        frames.append((pts, cols, pose))
    return scene, rgbs, frames


def fused(frames, **kw) -> SceneMap:
    m = SceneMap(**kw)
    for i, (pts, cols, pose) in enumerate(frames):
        m.integrate(pts, cols, pose, stamp=float(i))
    return m


def test_fused_map_lies_on_the_mesh_surface_and_covers_it(room):
    scene, _, frames = room
    snap = fused(frames).snapshot()
    dist = scene.compute_distance(o3d.core.Tensor(snap.points)).numpy()
    assert len(snap) > 20_000
    assert np.mean(dist <= 0.02) > 0.95
    # Coverage: every observed surface point has a map voxel point within one voxel diagonal.
    world = np.concatenate([transform_points(p, T) for p, _, T in frames])
    sample = world[:: max(1, len(world) // 20_000)]
    tree = o3d.core.nns.NearestNeighborSearch(o3d.core.Tensor(snap.points))
    tree.knn_index()
    _, d2 = tree.knn_search(o3d.core.Tensor(sample), 1)
    assert np.mean(np.sqrt(d2.numpy()[:, 0]) <= 0.02 * np.sqrt(3)) > 0.99


def test_map_equals_brute_force_voxelization_of_all_points(room):
    _, _, frames = room
    snap = fused(frames).snapshot()
    world = np.concatenate([transform_points(p, T) for p, _, T in frames]).astype(np.float64)
    colors = np.concatenate([c for _, c, _ in frames]).astype(np.float64)
    coords = np.floor(world.astype(np.float32) * np.float32(1 / 0.02)).astype(np.int64)
    ref_coords, inv, ref_counts = np.unique(coords, axis=0, return_inverse=True, return_counts=True)
    ref_mean = np.zeros((len(ref_coords), 6))
    np.add.at(ref_mean, inv.ravel(), np.hstack([world, colors]))
    ref_mean /= ref_counts[:, None]
    mine = unpack_keys(snap.keys)
    order = np.lexsort(mine.T[::-1])
    np.testing.assert_array_equal(mine[order], ref_coords)
    np.testing.assert_array_equal(snap.counts[order], ref_counts)
    np.testing.assert_allclose(snap.points[order], ref_mean[:, :3], atol=2e-5)
    np.testing.assert_allclose(snap.colors[order], ref_mean[:, 3:], atol=2e-5)


def test_box_voxels_take_the_box_color(room):
    scene, rgbs, frames = room
    snap = fused(frames).snapshot()
    corner, size, rgb = BOXES[1]
    lo, hi = np.add(corner, 0.03), np.add(corner, size) - 0.03  # top face interior, away from edges
    top = (np.all(snap.points[:, :2] > lo[:2], axis=1) & np.all(snap.points[:, :2] < hi[:2], axis=1)
           & (np.abs(snap.points[:, 2] - hi[2] - 0.03) < 0.02))
    assert top.sum() > 100
    np.testing.assert_allclose(snap.colors[top], np.broadcast_to(rgb, (top.sum(), 3)), atol=1.5 / 255)


def test_eviction_drops_least_recently_seen_then_fewest_observations():
    m = SceneMap(voxel_size=1.0, max_voxels=10, evict_fraction=0.0)
    old = np.array([[i + 0.5, 0.5, 0.5] for i in range(6)])
    m.integrate(np.repeat(old, [1, 3, 1, 3, 1, 3], axis=0), None, np.eye(4), stamp=1.0)
    m.integrate(np.array([[i + 0.5, 5.5, 0.5] for i in range(4)]), None, np.eye(4), stamp=2.0)
    assert len(m) == 10
    m.integrate(np.array([[i + 0.5, 9.5, 0.5] for i in range(3)]), None, np.eye(4), stamp=3.0)
    snap = m.snapshot()
    assert len(snap) == 10 and m.evicted_total == 3
    kept = {tuple(c) for c in unpack_keys(snap.keys)}
    assert {(0, 0, 0), (2, 0, 0), (4, 0, 0)}.isdisjoint(kept)  # stamp 1, one observation each
    assert {(1, 0, 0), (3, 0, 0), (5, 0, 0), (0, 9, 0), (2, 9, 0)} <= kept


def test_eviction_matches_a_sorted_reference_policy():
    from uniseg3d_ros.mapping.voxel_hash import pack_keys

    rng = np.random.default_rng(3)
    m = SceneMap(voxel_size=1.0, max_voxels=400, evict_fraction=0.1)
    flat = rng.permutation(900)[:450]  # 450 distinct voxels in a 30 x 30 grid
    cells = np.column_stack([flat // 30, flat % 30, np.zeros(450, np.int64)])
    for t in range(4):  # 4 x 100 new voxels (1-3 points each) + 20 revisited ones: exactly the cap
        new = cells[100 * t:100 * (t + 1)]
        old = cells[rng.choice(100 * t, 20, replace=False)] if t else np.zeros((0, 3))
        batch = np.concatenate([np.repeat(new, rng.integers(1, 4, len(new)), axis=0), old]) + 0.5
        m.integrate(batch, None, np.eye(4), stamp=float(t))
    before = m.snapshot()
    assert len(before) == 400 and m.evicted_total == 0
    extra = cells[400:450]
    m.integrate(extra + 0.5, None, np.eye(4), stamp=99.0)
    # Reference: rows sorted by (last_seen, count, row); the first 90 go, survivors keep row order.
    last = np.concatenate([before.last_seen, np.full(len(extra), 99.0)])
    counts = np.concatenate([before.counts, np.ones(len(extra), np.int32)])
    keys = np.concatenate([before.keys, np.sort(pack_keys(extra))])
    n = len(keys)
    order = np.lexsort((np.arange(n), counts, last))
    survivors = np.sort(order[n - 360:])
    np.testing.assert_array_equal(m.snapshot().keys, keys[survivors])
    assert len(m) == 360 and m.evicted_total == n - 360


def test_voxel_hash_table_agrees_with_a_dict():
    from uniseg3d_ros.mapping.voxel_hash import VoxelHashTable

    rng = np.random.default_rng(4)
    table, ref = VoxelHashTable(capacity=16), {}
    universe = rng.choice(2**40, 20_000, replace=False).astype(np.int64)
    for batch in np.array_split(rng.permutation(universe[:15_000]), 7):
        ids = table.lookup(batch)
        assert np.all(ids == -1)
        new_ids = np.arange(len(ref), len(ref) + len(batch))
        table.insert(batch, new_ids)
        ref.update(zip(batch.tolist(), new_ids.tolist()))
    assert len(table) == 15_000 and table.size <= table.capacity * table.max_load
    probe = rng.permutation(universe)
    np.testing.assert_array_equal(table.lookup(probe), [ref.get(k, -1) for k in probe.tolist()])
    keep = universe[:15_000:3]
    table.rebuild(keep, np.arange(len(keep)))
    np.testing.assert_array_equal(table.lookup(keep), np.arange(len(keep)))
    assert np.all(table.lookup(universe[15_000:]) == -1)
    # A nearly full small table forces probe runs that wrap past the last slot.
    small = VoxelHashTable(capacity=16, max_load=0.95)
    small.insert(universe[:5], np.arange(5))
    small.insert(universe[5:60], np.arange(5, 60))  # grows to 64 slots: bulk load at load 0.94
    assert small.capacity == 64
    occupied = np.flatnonzero(small._keys >= 0)
    assert np.any(occupied < small._slots(small._keys[occupied]))  # some runs wrapped around
    np.testing.assert_array_equal(small.lookup(universe[:60]), np.arange(60))
    assert np.all(small.lookup(universe[60:100]) == -1)


def test_voxel_count_never_exceeds_the_cap(room):
    _, _, frames = room
    m = SceneMap(max_voxels=5000)
    for i, (pts, cols, pose) in enumerate(frames):
        m.integrate(pts, cols, pose, stamp=float(i))
        assert len(m) <= 5000
    last = m.snapshot().last_seen
    assert last.max() == len(frames) - 1 and m.evicted_total > 0


def test_crop_box_and_max_range_filter_points():
    rng = np.random.default_rng(1)
    pts = rng.uniform(-4, 4, (20_000, 3)).astype(np.float32)
    pose = np.eye(4)
    pose[:3, 3] = [10.0, 0.0, 0.0]
    m = SceneMap(crop_min=[8.0, -1.0, -1.0], crop_max=[12.0, 1.0, 1.0], max_range=3.0)
    n = m.integrate(pts, None, pose)
    snap = m.snapshot()
    inside = (np.linalg.norm(pts, axis=1) <= 3.0) & np.all(np.abs(pts) <= [2, 1, 1], axis=1)
    assert n == inside.sum() and snap.counts.sum() == n
    assert np.all(snap.points >= [8, -1, -1]) and np.all(snap.points <= [12, 1, 1])
    assert np.all(np.linalg.norm(snap.points - [10, 0, 0], axis=1) <= 3.0 + 1e-5)


def test_version_changes_only_on_changes():
    m = SceneMap()
    v0 = m.version
    m.snapshot()
    assert m.version == v0
    assert m.integrate(np.full((5, 3), np.nan), None, np.eye(4)) == 0
    assert m.version == v0
    assert m.integrate(np.zeros((0, 3)), np.zeros((0, 3)), np.eye(4)) == 0
    assert m.version == v0
    m.integrate(np.ones((5, 3)), None, np.eye(4))
    v1 = m.version
    assert v1 > v0 and m.snapshot().version == v1
    m.clear()
    assert m.version > v1 and len(m) == 0


def test_snapshot_is_immutable_while_integration_continues(room):
    _, _, frames = room
    m = SceneMap()
    m.integrate(*frames[0][:2], frames[0][2], stamp=0.0)
    snap = m.snapshot()
    copy = {k: np.array(getattr(snap, k)) for k in ("points", "colors", "counts", "last_seen", "keys")}
    m.integrate(*frames[0][:2], frames[0][2], stamp=1.0)  # same voxels: an in-place update
    for i, (pts, cols, pose) in enumerate(frames[1:4], 2):
        m.integrate(pts, cols, pose, stamp=float(i))
    m.clear()
    for k, v in copy.items():
        np.testing.assert_array_equal(getattr(snap, k), v)
    with pytest.raises(ValueError):
        snap.points[0, 0] = 1.0  # read-only view


def test_concurrent_integrate_and_snapshot_stay_consistent(room):
    _, _, frames = room
    m = SceneMap()
    totals = {m.version: 0}
    errors: list[BaseException] = []
    snaps: list[MapSnapshot] = []
    done = threading.Event()

    def writer():
        try:
            total = 0
            for rep in range(3):
                for i, (pts, cols, pose) in enumerate(frames):
                    total += m.integrate(pts, cols, pose, stamp=float(rep * 10 + i))
                    totals[m.version] = total
        except BaseException as e:  # noqa: BLE001 - reported by the main thread
            errors.append(e)
        finally:
            done.set()

    def reader():
        try:
            while not done.is_set():
                s = m.snapshot()
                assert len(s.points) == len(s.colors) == len(s.counts) == len(s.last_seen) == len(s.keys)
                if not snaps or snaps[-1].version != s.version:
                    snaps.append(s)
                time.sleep(0.0005)  # throttle (a node snapshots now and then), not synchronization
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=writer), threading.Thread(target=reader)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    assert len(snaps) >= 2  # snapshots of at least two different versions were checked
    for s in snaps:  # each snapshot shows exactly the points fused up to its version
        assert int(s.counts.sum()) == totals[s.version]
        assert len(np.unique(s.keys)) == len(s.keys)
    assert int(m.snapshot().counts.sum()) == max(totals.values())


def test_two_writer_threads_give_the_sequential_result(room):
    _, _, frames = room
    m = SceneMap()
    halves = [frames[0::2], frames[1::2]]
    threads = [threading.Thread(target=lambda fs=fs: [m.integrate(p, c, T) for p, c, T in fs])
               for fs in halves]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    ref = fused(frames).snapshot()
    snap = m.snapshot()
    a, b = np.argsort(snap.keys), np.argsort(ref.keys)
    np.testing.assert_array_equal(snap.keys[a], ref.keys[b])
    np.testing.assert_array_equal(snap.counts[a], ref.counts[b])
    np.testing.assert_allclose(snap.points[a], ref.points[b], atol=1e-5)


def test_uint8_and_float_colors_fuse_the_same():
    rng = np.random.default_rng(2)
    pts = rng.random((1000, 3))
    c8 = rng.integers(0, 256, (1000, 3), dtype=np.uint8)
    a, b = SceneMap(voxel_size=0.1), SceneMap(voxel_size=0.1)
    a.integrate(pts, c8, np.eye(4))
    b.integrate(pts, c8 / 255.0, np.eye(4))
    np.testing.assert_allclose(a.snapshot().colors, b.snapshot().colors, atol=1e-6)


@pytest.mark.parametrize(
    ("pose", "match"),
    [(np.eye(3), "shape"), (np.diag([1.0, 1, 1, 2]), "last row"), (np.diag([1.0, 1, -1, 1]), "rotation"),
     (np.full((4, 4), np.nan), "non-finite")],
)
def test_bad_pose_is_rejected(pose, match):
    with pytest.raises(ValueError, match=match):
        SceneMap().integrate(np.zeros((3, 3)), None, pose)


def test_bad_inputs_are_rejected():
    m = SceneMap()
    with pytest.raises(ValueError, match="points"):
        m.integrate(np.zeros((3, 2)), None, np.eye(4))
    with pytest.raises(ValueError, match="colors"):
        m.integrate(np.zeros((3, 3)), np.zeros((2, 3)), np.eye(4))
    with pytest.raises(ValueError, match="voxel_size"):
        SceneMap(voxel_size=0)
    with pytest.raises(ValueError, match="crop_min"):
        SceneMap(crop_min=[0, 0, 0])


@pytest.mark.parametrize(("colors", "match"), [
    (np.full((4, 3), 255.0), "0-255"),
    (np.full((4, 3), -0.5), r"\[0, 1\]"),
    (np.full((4, 3), 7, np.int64), "dtype"),
])
def test_colors_outside_unit_range_are_rejected(colors, match):
    with pytest.raises(ValueError, match=match):
        SceneMap().integrate(np.zeros((4, 3)), colors, np.eye(4))


def test_nan_colors_fuse_as_grey():
    m = SceneMap(voxel_size=1.0)
    m.integrate(np.full((2, 3), 0.5), np.array([[np.nan, 0.2, 0.2], [np.nan, 0.4, 0.4]]), np.eye(4))
    np.testing.assert_allclose(m.snapshot().colors, [[0.5, 0.3, 0.3]], atol=1e-6)
