"""Procedural scene generator: determinism, labels, density and non-interpenetration."""

from __future__ import annotations

import itertools

import numpy as np
import open3d as o3d
import pytest

from uniseg3d_model.data.labels import SCANNET20_CLASSES
from uniseg3d_model.synthetic.geometry import boxes_overlap
from uniseg3d_model.synthetic.layout import ROOM_TYPES
from uniseg3d_model.synthetic.scene import SceneConfig, generate_scene

STRUCTURE = ("wall", "floor")


@pytest.fixture(scope="module")
def office():
    return generate_scene(1, "scene0001_00", room_type="office")


def test_same_seed_gives_identical_scene():
    a, b = generate_scene(7), generate_scene(7)
    for name in ("vertices", "faces", "colors", "semantic", "instance"):
        assert np.array_equal(getattr(a, name), getattr(b, name)), name
    names = [[(o.raw_category, o.color_name) for o in s.objects] for s in (a, b)]
    assert names[0] == names[1]


def test_different_seeds_give_different_scenes():
    a, b = generate_scene(3), generate_scene(4)
    assert a.num_vertices != b.num_vertices or not np.array_equal(a.vertices, b.vertices)


def test_vertex_labels_match_objects(office):
    assert office.instance.min() >= 0
    ids = [o.object_id for o in office.objects]
    assert ids == list(range(len(ids)))
    for o in office.objects:
        mask = office.instance == o.object_id
        assert mask.sum() > 0
        assert np.all(office.semantic[mask] == (o.nyu40id if o.annotated else 0))
    # annotated objects are numbered first, as in ScanNet's aggregation
    flags = [o.annotated for o in office.objects]
    assert flags == sorted(flags, reverse=True)
    # faces never join two objects
    f = office.faces
    assert np.all(office.instance[f[:, 0]] == office.instance[f[:, 1]])
    assert np.all(office.instance[f[:, 0]] == office.instance[f[:, 2]])


def test_mesh_density_like_scannet(office):
    v, f = office.vertices.astype(np.float64), office.faces
    edges = np.linalg.norm(v[f[:, 0]] - v[f[:, 1]], axis=1)
    assert 0.01 < np.median(edges) < 0.05
    assert 30_000 < office.num_vertices < 150_000


def test_objects_stay_inside_room():
    """Furniture lies inside the room up to the 4 mm vertex jitter; walls overlap 2 cm at corners."""
    for seed in range(4):
        s = generate_scene(seed)
        hi = np.array([s.room.length, s.room.width, s.room.height])
        things = ~np.isin(s.semantic, [1, 2])
        for mask, tol in ((things, 0.02), (~things, 0.045)):
            v = s.vertices[mask]
            assert v.min() > -tol and np.all(v.max(0) < hi + tol), (seed, tol)


def test_furniture_boxes_do_not_overlap():
    for seed in range(8):
        s = generate_scene(seed)
        things = [o for o in s.objects if o.raw_category not in STRUCTURE]
        for a, b in itertools.combinations(things, 2):
            if a.object_id == b.support or b.object_id == a.support:  # touching, z intervals meet
                assert abs(max(a.box.zmin, b.box.zmin) - min(a.box.zmax, b.box.zmax)) < 1e-9
                continue
            assert not boxes_overlap(a.box, b.box), (seed, a.raw_category, b.raw_category)


def test_furniture_meshes_do_not_interpenetrate(office):
    """Mesh check: every vertex of one object is outside the others' boxes and meshes."""
    things = [o for o in office.objects if o.raw_category not in STRUCTURE]
    noise = 4 * SceneConfig().surface_noise
    for a in things:
        ma = office.instance == a.object_id
        fa = office.faces[np.all(ma[office.faces], axis=1)]
        remap = np.cumsum(ma) - 1
        rs = o3d.t.geometry.RaycastingScene()
        rs.add_triangles(office.vertices[ma], remap[fa].astype(np.uint32))
        near = [o.object_id for o in things
                if a.object_id not in (o.object_id, o.support) and o.object_id != a.support]
        others = np.isin(office.instance, near)
        dist = rs.compute_distance(office.vertices[others]).numpy()
        assert dist.min() > 0.005, a.raw_category
        assert not np.any(a.box.contains(office.vertices[others].astype(np.float64), margin=noise))


def test_every_scannet20_class_appears_across_room_types():
    seen = set()
    for i, rtype in enumerate(sorted(ROOM_TYPES) * 2):
        s = generate_scene(100 + i, room_type=rtype)
        seen |= {SCANNET20_CLASSES[o.scannet20] for o in s.objects if o.scannet20 >= 0}
    assert seen == set(SCANNET20_CLASSES)


def test_small_objects_stand_on_furniture():
    found = 0
    for seed in range(6):
        s = generate_scene(seed)
        for o in s.objects:
            if o.support >= 0:
                sup = s.object(o.support)
                assert o.raw_category in ("box", "lamp", "book") and o.scannet20 == -1
                assert abs(o.box.zmin - sup.box.zmax) < 1e-9
                corners = np.column_stack([o.box.footprint(), np.full(4, sup.box.center[2])])
                assert np.all(sup.box.grown(1e-6).contains(corners)), (seed, o.raw_category)
                found += 1
    assert found >= 3


def test_rotated_boxes_overlap_test():
    from uniseg3d_model.synthetic.geometry import OrientedBox

    a = OrientedBox(np.array([0.0, 0.0, 0.5]), np.array([2.0, 0.2, 1.0]), 0.0)
    b = OrientedBox(np.array([1.1, 0.9, 0.5]), np.array([2.0, 0.2, 1.0]), np.pi / 4)  # diagonal bar
    assert not boxes_overlap(a, b)  # axis-aligned bounds would overlap; the oriented ones do not
    assert boxes_overlap(a, OrientedBox(np.array([0.8, 0.6, 0.5]), np.array([2.0, 0.2, 1.0]), np.pi / 4))
    assert not boxes_overlap(a, OrientedBox(np.array([0.0, 0.0, 1.5]), np.array([1.0, 1.0, 1.0])))
    assert boxes_overlap(a, OrientedBox(np.array([0.0, 0.25, 0.5]), np.array([1.0, 0.2, 1.0])), margin=0.1)


def test_bad_config_raises_value_error():
    with pytest.raises(ValueError, match="spacing"):
        SceneConfig(spacing=0.0)
    with pytest.raises(ValueError, match="room_types"):
        SceneConfig(room_types=("garage",))
    with pytest.raises(ValueError, match="seed"):
        generate_scene(-1)
    with pytest.raises(ValueError, match="room_type"):
        generate_scene(0, room_type="garage")
