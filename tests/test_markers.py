"""Marker data for instances: DELETEALL first, points/boxes/labels per instance, fixed colors."""

from dataclasses import dataclass

import numpy as np
import pytest

from uniseg3d_ros.node.markers import (
    PALETTE,
    box_edges,
    build_markers,
    class_color,
    marker_array_to_specs,
    to_marker_array,
)


@dataclass
class Inst:
    id: int
    class_id: int
    label: str
    score: float
    point_indices: np.ndarray
    centroid: np.ndarray
    bbox_min: np.ndarray
    bbox_max: np.ndarray


def make_instances(points, groups):
    out = []
    for k, (idx, label) in enumerate(groups):
        p = points[idx]
        out.append(Inst(k, k + 2, label, 0.5 + 0.1 * k, np.asarray(idx), p.mean(0), p.min(0), p.max(0)))
    return out


@pytest.fixture
def scene():
    rng = np.random.default_rng(0)
    chair = rng.uniform([0, 0, 0], [0.5, 0.5, 1.0], size=(200, 3))
    table = rng.uniform([2, 2, 0], [3, 3, 0.8], size=(300, 3))
    points = np.concatenate([chair, table]).astype(np.float32)
    return points, make_instances(points, [(np.arange(200), "chair"), (np.arange(200, 500), "table")])


def test_first_marker_is_deleteall_then_three_per_instance(scene):
    points, insts = scene
    specs = build_markers(insts, points)
    assert specs[0].kind == "deleteall"
    assert len(specs) == 1 + 3 * len(insts)
    kinds = sorted({(s.ns, s.kind) for s in specs[1:]})
    assert kinds == [("boxes", "line_list"), ("labels", "text"), ("points", "points")]


def test_instance_points_are_exactly_the_instance_points(scene):
    points, insts = scene
    specs = {(s.ns, s.id): s for s in build_markers(insts, points, style="cube_list")}
    for inst in insts:
        spec = specs[("points", inst.id)]
        assert spec.kind == "cube_list"
        np.testing.assert_array_equal(spec.points, points[inst.point_indices])


def test_box_edges_are_the_12_edges_of_the_bounds():
    edges = box_edges([0, 0, 0], [1, 2, 3]).reshape(12, 2, 3)
    lengths = np.linalg.norm(edges[:, 0] - edges[:, 1], axis=1)
    assert sorted(lengths.tolist()) == [1.0] * 4 + [2.0] * 4 + [3.0] * 4
    assert set(map(tuple, edges.reshape(-1, 3).tolist())) == {
        (x, y, z) for x in (0, 1) for y in (0, 2) for z in (0, 3)}


def test_label_text_has_class_and_score_above_the_box(scene):
    points, insts = scene
    labels = [s for s in build_markers(insts, points) if s.ns == "labels"]
    assert [s.text for s in labels] == ["chair 0.50", "table 0.60"]
    for s, inst in zip(labels, insts):
        assert s.position[2] > inst.bbox_max[2]


def test_label_text_names_the_persistent_object_when_known(scene):
    from dataclasses import replace

    points, insts = scene
    named = [replace(insts[0], id=0), insts[1]]
    named[0].object_id = 7  # what the node sets from its object map
    labels = [s for s in build_markers(named, points) if s.ns == "labels"]
    assert [s.text for s in labels] == ["chair 0.50 #7", "table 0.60"]


def test_colors_are_fixed_per_class():
    np.testing.assert_array_equal(class_color(99, "chair"), PALETTE[4])  # ScanNet20 index of chair
    np.testing.assert_array_equal(class_color(0, "mug"), class_color(7, "mug"))
    assert not np.array_equal(class_color(0, "mug"), class_color(0, "chair"))
    np.testing.assert_array_equal(class_color(3), PALETTE[3])


def test_points_are_subsampled_to_the_budget(scene):
    points, insts = scene
    specs = build_markers(insts, points, max_points=100)
    drawn = sum(len(s.points) for s in specs if s.ns == "points")
    assert 50 <= drawn <= 100


def test_out_of_range_indices_raise(scene):
    points, insts = scene
    insts[0].point_indices = np.array([0, 10_000])
    with pytest.raises(ValueError, match="point_indices"):
        build_markers(insts, points)


def test_marker_array_round_trip(scene):
    pytest.importorskip("visualization_msgs.msg")
    points, insts = scene
    specs = build_markers(insts, points)
    msg = to_marker_array(specs, "map")
    assert msg.markers[0].action == msg.markers[0].DELETEALL
    assert all(m.header.frame_id == "map" for m in msg.markers)
    back = marker_array_to_specs(msg)
    assert [(s.ns, s.id, s.kind) for s in back] == [(s.ns, s.id, s.kind) for s in specs]
    for a, b in zip(specs[1:], back[1:]):
        assert a.text == b.text
        if a.kind != "text":
            np.testing.assert_allclose(a.points, b.points, atol=1e-6)
