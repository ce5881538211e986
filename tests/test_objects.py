"""Persistent objects (uniseg3d_ros.inference.objects): ids survive a growing map and re-runs;
merge, split and retire follow the documented rules. No ROS."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial import cKDTree

from tests.synthetic_room import BOXES, make_room
from uniseg3d_model.data.labels import SCANNET20_CLASSES
from uniseg3d_ros.inference.objects import ObjectConfig, ObjectMap, voxel_keys
from uniseg3d_ros.inference.results import instance_stats
from uniseg3d_ros.mapping.scene_map import SceneMap


def _instances(points, masks, classes, scores=None):
    """InstanceInfo list from (M, N) masks over points (the engine's own result builder)."""
    masks = np.asarray(masks, dtype=bool).reshape(-1, len(points))
    scores = np.full(len(masks), 0.9) if scores is None else np.asarray(scores)
    labels = [SCANNET20_CLASSES[c] for c in classes]
    return instance_stats(points, masks, np.asarray(classes), scores, labels)


def test_voxel_keys_are_unique_per_cell_and_order_free():
    pts = np.array([[0.001, 0.0, 0.0], [0.019, 0.001, 0.0], [0.021, 0.0, 0.0], [-0.001, 0.0, 0.0]])
    keys = voxel_keys(pts, 0.02)
    assert len(keys) == 3 and np.all(np.diff(keys) > 0)
    np.testing.assert_array_equal(voxel_keys(pts[::-1], 0.02), keys)


def test_every_object_keeps_its_id_while_the_map_grows_frame_by_frame():
    """A camera sweeps the room along x; the map (real SceneMap, 2 cm voxels) grows frame by
    frame. Each frame is "segmented" with the ground truth transferred to the map's points,
    masks thinned at random (imperfect segmentation) and listed in a random order, so the
    per-run ids change every frame. Every box must keep one persistent id from its first
    sighting on, and distinct boxes distinct ids."""
    room = make_room(seed=3, density=400.0)
    rng = np.random.default_rng(0)
    scene = SceneMap(voxel_size=0.02, max_voxels=1_000_000)
    objects = ObjectMap(ObjectConfig(voxel_size=0.02))
    tree = cKDTree(room.points)
    seen: dict[int, set[int]] = {i: set() for i in range(len(BOXES))}
    first: dict[int, float] = {}
    n_frames = 9
    for k in range(n_frames):
        stamp = 10.0 + k
        lo = -0.2 + 0.25 * k  # a 0.8 m wide view sliding over x = -0.2 .. 2.2
        view = (room.points[:, 0] >= lo) & (room.points[:, 0] < lo + 0.8)
        scene.integrate(room.points[view], room.colors[view], None, stamp=stamp)
        snap = scene.snapshot()
        _, nearest = tree.query(snap.points)
        gt = room.instance[nearest]
        boxes = [i for i in range(len(BOXES)) if (gt == i).sum() >= 20]
        order = rng.permutation(boxes)
        masks = [(gt == i) & (rng.random(len(gt)) > 0.15) for i in order]
        classes = [int(room.instance_class[i]) for i in order]
        update = objects.update(snap.points, _instances(snap.points, masks, classes), stamp, snap.version)
        for box, oid in zip(order, update.ids):
            seen[int(box)].add(oid)
            first.setdefault(int(box), stamp)
        assert not update.retired, f"frame {k}: retired {update.retired}"
    assert all(len(ids) == 1 for ids in seen.values()), seen
    ids = {box: next(iter(s)) for box, s in seen.items()}
    assert len(set(ids.values())) == len(BOXES)
    live = {o.id: o for o in objects.snapshot()}
    assert set(live) == set(ids.values())
    for box, oid in ids.items():
        obj = live[oid]
        assert obj.label == BOXES[box][2]
        assert obj.first_seen == first[box] and obj.last_seen == 10.0 + n_frames - 1
        # the geometry is the latest (fullest) view of the box
        true_pts = room.points[room.instance == box]
        np.testing.assert_allclose(obj.centroid, true_pts.mean(0), atol=0.05)


def _blocks(n_per=200, seed=0):
    """Points of three separate 0.3 m cubes' surfaces along x (blocks 0, 1, 2)."""
    rng = np.random.default_rng(seed)
    pts, block = [], []
    for b in range(3):
        p = rng.random((n_per * 6, 3)) * 0.3
        p[:, 0] += 0.5 * b
        pts.append(p)
        block.append(np.full(len(p), b))
    return np.concatenate(pts), np.concatenate(block)


def test_two_objects_seen_as_one_merge_into_the_oldest_id():
    pts, block = _blocks()
    m = ObjectMap()
    first = m.update(pts, _instances(pts, [block == 1, block == 0], [5, 5]), stamp=1.0)
    older, newer = first.ids  # block 1 (listed first) got the first id
    assert newer > older
    update = m.update(pts, _instances(pts, [(block == 0) | (block == 1)], [5]), stamp=2.0)
    assert update.ids == [min(older, newer)]
    assert update.retired == {max(older, newer): min(older, newer)}
    obj = m.snapshot()[0]
    assert len(m) == 1 and obj.times_seen == 3 and obj.first_seen == 1.0 and obj.last_seen == 2.0


def test_an_object_seen_as_two_keeps_its_id_on_the_larger_part():
    pts, block = _blocks()
    small = (block == 1) & (pts[:, 1] < 0.1)
    large = (block == 1) & ~small
    m = ObjectMap()
    (oid,) = m.update(pts, _instances(pts, [block == 1], [3]), stamp=1.0).ids
    update = m.update(pts, _instances(pts, [small, large], [3, 3]), stamp=2.0)
    assert update.ids[1] == oid and update.ids[0] not in (oid, -1)
    assert update.split_from == {update.ids[0]: oid} and update.created == [update.ids[0]]
    assert m.next_id == update.ids[0] + 1  # ids are never reused


def test_missed_objects_retire_after_the_configured_runs_and_cleared_ones_at_once():
    pts, block = _blocks()
    m = ObjectMap(ObjectConfig(retire_after=2))
    ids = m.update(pts, _instances(pts, [block == 0, block == 1, block == 2], [3, 4, 5]), stamp=1.0).ids
    only_first = _instances(pts, [block == 0], [3])
    assert m.update(pts, only_first, stamp=2.0).retired == {}  # missed once: kept
    assert m.update(pts, only_first, stamp=3.0).retired == {ids[1]: -1, ids[2]: -1}
    # block 0 leaves the map (evicted / cleared): retired at the next run even though not missed before
    rest = block != 0
    assert m.update(pts[rest], [], stamp=4.0).retired == {ids[0]: -1}
    assert len(m) == 0


def test_class_is_a_score_vote_so_one_flicker_does_not_relabel():
    pts, block = _blocks()
    m = ObjectMap()
    for stamp, cls, score in [(1.0, 5, 0.8), (2.0, 5, 0.7), (3.0, 7, 0.9)]:
        m.update(pts, _instances(pts, [block == 0], [cls], [score]), stamp=stamp)
    obj = m.snapshot()[0]
    assert obj.class_id == 5 and obj.label == SCANNET20_CLASSES[5]
    assert obj.score == pytest.approx((0.8 + 0.7) / 3)


def test_lookup_names_the_object_a_mask_hits():
    pts, block = _blocks()
    m = ObjectMap()
    ids = m.update(pts, _instances(pts, [block == 0, block == 2], [3, 4]), stamp=1.0).ids
    part = np.flatnonzero((block == 2) & (pts[:, 2] > 0.15))  # half of block 2
    assert m.lookup(pts, part) == ids[1]
    assert m.lookup(pts, np.flatnonzero(block == 1)) == -1  # block 1 is no object
    assert m.lookup(pts, np.zeros(0, np.int64)) == -1


def test_config_rejects_bad_values_naming_them():
    with pytest.raises(ValueError, match="min_overlap"):
        ObjectConfig(min_overlap=0.0)
    with pytest.raises(ValueError, match="retire_after"):
        ObjectConfig(retire_after=0)


def test_intersection_counts_match_a_brute_force_with_shared_keys():
    from uniseg3d_ros.inference.objects import _intersections

    rng = np.random.default_rng(5)
    b = [np.unique(rng.integers(0, 300, n)) for n in (50, 120, 0, 80)]  # overlapping key sets
    a = [np.unique(rng.integers(0, 300, n)) for n in (10, 200, 0)]
    want = np.array([[len(np.intersect1d(x, y)) for y in b] for x in a])
    np.testing.assert_array_equal(_intersections(a, b), want)
