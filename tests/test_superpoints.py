"""Superpoints: ScanNet-segmentator-style mesh segmentation, point-cloud segmentation, pooling."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from uniseg3d_model.graph_segmentation import felzenszwalb_segment, sort_edges
from uniseg3d_model.superpoints import pool, segment_mesh, segment_points


def box_mesh(size=(1.0, 1.0, 0.5), subdivisions: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Closed box surface, every face subdivided into a fine triangle grid."""
    import open3d as o3d

    mesh = o3d.geometry.TriangleMesh.create_box(*size).subdivide_midpoint(subdivisions)
    return np.asarray(mesh.vertices).copy(), np.asarray(mesh.triangles).copy()


def grid_mesh(n: int, size: float, height_fn) -> tuple[np.ndarray, np.ndarray]:
    """(n*n) vertex heightfield over [0, size]^2 with two triangles per cell."""
    xs, ys = np.meshgrid(np.linspace(0, size, n), np.linspace(0, size, n), indexing="ij")
    v = np.stack([xs.ravel(), ys.ravel(), height_fn(xs, ys).ravel()], 1)
    idx = np.arange(n * n).reshape(n, n)
    a, b, c, d = idx[:-1, :-1].ravel(), idx[1:, :-1].ravel(), idx[:-1, 1:].ravel(), idx[1:, 1:].ravel()
    return v, np.concatenate([np.stack([a, b, d], 1), np.stack([a, d, c], 1)])


def same_partition(x: np.ndarray, y: np.ndarray) -> bool:
    """True when two labelings group the elements identically (ids may differ)."""
    pairs = np.unique(np.stack([x, y], 1), axis=0)
    return len(pairs) == len(np.unique(x)) == len(np.unique(y))


def reference_segmentator(v: np.ndarray, f: np.ndarray, kthr: float, min_verts: int) -> np.ndarray:
    """Straight per-face / per-edge loops written from the ScanNet Segmentator description."""
    normals = np.zeros((len(v), 3))
    counts = np.zeros(len(v))
    edges = []
    for i1, i2, i3 in f.tolist():
        edges += [(i1, i2), (i1, i3), (i3, i2)]
        n = np.cross(v[i2] - v[i1], v[i3] - v[i1])
        n = n / np.linalg.norm(n)
        for i in (i1, i2, i3):
            t = 1.0 / (counts[i] + 1.0)
            normals[i] = t * n + (1 - t) * normals[i]
            counts[i] += 1
    weights = []
    for a, b in edges:
        d = (v[b] - v[a]) / np.linalg.norm(v[b] - v[a])
        ww = 1.0 - normals[a] @ normals[b]
        weights.append(ww * ww if normals[b] @ d > 0 else ww)
    order = sorted(range(len(edges)), key=lambda e: weights[e])
    parent, rank, size = list(range(len(v))), [0] * len(v), [1] * len(v)
    thr = [kthr] * len(v)

    def find(x):
        y = x
        while parent[y] != y:
            y = parent[y]
        return y

    def join(x, y):
        if rank[x] > rank[y]:
            parent[y] = x
            size[x] += size[y]
        else:
            parent[x] = y
            size[y] += size[x]
            rank[y] += rank[x] == rank[y]

    for e in order:
        a, b = find(edges[e][0]), find(edges[e][1])
        if a != b and weights[e] <= thr[a] and weights[e] <= thr[b]:
            join(a, b)
            r = find(a)
            thr[r] = weights[e] + kthr / size[r]
    for e in order:
        a, b = find(edges[e][0]), find(edges[e][1])
        if a != b and (size[a] < min_verts or size[b] < min_verts):
            join(a, b)
    return np.array([find(i) for i in range(len(v))])


@pytest.fixture(params=["python", "numba"])
def backend(request, monkeypatch):
    """Run a test with the pure-Python union-find and with the numba kernel (when installed)."""
    if request.param == "numba":
        pytest.importorskip("numba")
    monkeypatch.setenv("UNISEG3D_NO_NUMBA", "1" if request.param == "python" else "0")
    return request.param


def test_graph_segmentation_backends_agree_on_random_graphs():
    pytest.importorskip("numba")
    rng = np.random.default_rng(5)
    for n, e, k, min_size in ((200, 800, 0.5, 5), (2000, 12000, 2.0, 30), (50, 40, 0.1, 3)):
        a, b = rng.integers(0, n, e), rng.integers(0, n, e)
        w = np.round(rng.random(e), 2)  # many ties: the stable edge order must match too
        py = felzenszwalb_segment(n, a, b, w, k, min_size, backend="python")
        nb = felzenszwalb_segment(n, a, b, w, k, min_size, backend="numba")
        assert same_partition(py, nb)
        pre = felzenszwalb_segment(n, *sort_edges(a, b, w), k, min_size, presorted=True)  # sorted once
        np.testing.assert_array_equal(pre, nb)


def test_segment_mesh_matches_reference_segmentator_on_noisy_mesh(backend):
    # A closed mesh: on open borders a vertex with one face has a normal exactly perpendicular
    # to that face's edges, and the convexity test becomes a floating-point coin toss.
    rng = np.random.default_rng(0)
    v, f = box_mesh()
    v = v + rng.normal(0, 0.004, v.shape)
    for kthr, min_verts in ((0.01, 20), (0.002, 5), (0.05, 0), (0.01, 0)):
        ours = segment_mesh(v, f, k_thresh=kthr, min_verts=min_verts)
        ref = reference_segmentator(v, f, kthr, min_verts)
        assert same_partition(ours, ref), (kthr, min_verts)


def test_segment_mesh_splits_a_box_into_its_six_faces():
    v, f = box_mesh()
    seg = segment_mesh(v, f)
    assert seg.max() + 1 == 6
    for axis in range(3):
        for value in (v[:, axis].min(), v[:, axis].max()):
            inner = np.abs(v[:, axis] - value) < 1e-9
            for other in {0, 1, 2} - {axis}:  # keep away from the box edges
                lo, hi = v[:, other].min(), v[:, other].max()
                inner &= (v[:, other] > lo + 0.1) & (v[:, other] < hi - 0.1)
            assert inner.sum() > 5 and len(np.unique(seg[inner])) == 1


def test_segment_mesh_separates_box_top_from_floor():
    v, f = grid_mesh(60, 3.0, lambda x, y: np.where((x > 1) & (x < 2) & (y > 1) & (y < 2), 0.5, 0.0))
    seg = segment_mesh(v, f)
    assert seg.dtype == np.int64 and seg.shape == (len(v),)
    top = (v[:, 2] > 0.49) & (np.abs(v[:, 0] - 1.5) < 0.4) & (np.abs(v[:, 1] - 1.5) < 0.4)
    floor = (v[:, 2] < 0.01) & ((v[:, 0] < 0.8) | (v[:, 0] > 2.2))
    assert len(np.unique(seg[top])) == 1
    assert len(np.unique(seg[floor])) == 1
    assert seg[top][0] != seg[floor][0]


def test_segment_mesh_ids_are_contiguous_and_respect_min_verts():
    rng = np.random.default_rng(1)
    v, f = grid_mesh(30, 1.0, lambda x, y: 0 * x)
    v = v + rng.normal(0, 0.01, v.shape)
    seg = segment_mesh(v, f, k_thresh=0.001, min_verts=15)
    s = seg.max() + 1
    assert set(np.unique(seg)) == set(range(s)) and s > 1
    assert np.bincount(seg).min() >= 15
    fine = segment_mesh(v, f, k_thresh=0.001, min_verts=0)
    assert fine.max() + 1 > s


def test_segment_mesh_larger_threshold_gives_fewer_segments():
    rng = np.random.default_rng(2)
    v, f = grid_mesh(40, 1.0, lambda x, y: 0 * x)
    v = v + rng.normal(0, 0.01, v.shape)
    counts = [segment_mesh(v, f, k_thresh=k, min_verts=1).max() + 1 for k in (0.001, 0.01, 0.1)]
    assert counts[0] > counts[1] > counts[2]


def test_segment_mesh_unused_vertex_stays_singleton():
    v, f = grid_mesh(10, 1.0, lambda x, y: 0 * x)
    v = np.concatenate([v, [[5.0, 5.0, 5.0]]])
    seg = segment_mesh(v, f, min_verts=5)
    assert np.sum(seg == seg[-1]) == 1


@pytest.mark.parametrize(
    ("vertices", "faces", "kw", "match"),
    [
        (np.zeros((4, 2)), np.zeros((1, 3), int), {}, "vertices"),
        (np.zeros((4, 3)), np.array([[0, 1, 4]]), {}, "out of range"),
        (np.zeros((4, 3)), np.zeros((1, 3), float), {}, "integer"),
        (np.zeros((4, 3)), np.zeros((1, 4), int), {}, "faces"),
        (np.full((4, 3), np.nan), np.zeros((1, 3), int), {}, "NaN"),
        (np.zeros((4, 3)), np.zeros((1, 3), int), {"k_thresh": 0.0}, "k_thresh"),
    ],
)
def test_segment_mesh_rejects_bad_input(vertices, faces, kw, match):
    with pytest.raises(ValueError, match=match):
        segment_mesh(vertices, faces, **kw)


def test_pool_is_scatter_mean_with_gradients():
    feats = torch.tensor([[1.0, 2.0], [3.0, 4.0], [10.0, 0.0], [5.0, 5.0]], requires_grad=True)
    sp = torch.tensor([0, 0, 2, 2])
    out = pool(feats, sp, num_superpoints=4)
    expected = torch.tensor([[2.0, 3.0], [0.0, 0.0], [7.5, 2.5], [0.0, 0.0]])
    assert torch.allclose(out, expected)
    out.sum().backward()
    assert torch.allclose(feats.grad, torch.full((4, 2), 0.5))
    assert pool(feats, sp).shape == (3, 2)


def test_pool_rejects_mismatched_or_out_of_range_ids():
    feats = torch.zeros(3, 2)
    with pytest.raises(ValueError, match="superpoints"):
        pool(feats, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="range|lie in"):
        pool(feats, torch.tensor([0, 1, 5]), num_superpoints=3)
    with pytest.raises(ValueError, match="integer"):
        pool(feats, torch.tensor([0.0, 1.0, 1.0]))


def sample_rect(origin, u, v, spacing: float) -> np.ndarray:
    """Points on a grid over the parallelogram origin + s*u + t*v, s, t in [0, 1]."""
    origin, u, v = (np.asarray(x, dtype=np.float64) for x in (origin, u, v))
    nu, nv = max(int(np.linalg.norm(u) / spacing), 1), max(int(np.linalg.norm(v) / spacing), 1)
    s, t = np.meshgrid((np.arange(nu) + 0.5) / nu, (np.arange(nv) + 0.5) / nv, indexing="ij")
    return origin + s.reshape(-1, 1) * u + t.reshape(-1, 1) * v


def room_scene(nx: int, ny: int, seed: int = 0, spacing: float = 0.015):
    """A floor, two walls and one box per 2 m x 2 m cell. Returns points (N, 3), colors (N, 3)
    and a surface id per point (0 floor, 1-2 walls, then 5 visible faces per box)."""
    rng = np.random.default_rng(seed)
    w, d = 2.0 * nx, 2.0 * ny
    surfaces = [
        (sample_rect((0, 0, 0), (w, 0, 0), (0, d, 0), spacing), (0.6, 0.5, 0.4)),
        (sample_rect((0, 0, 0), (w, 0, 0), (0, 0, 2.0), spacing), (0.9, 0.9, 0.85)),
        (sample_rect((0, 0, 0), (0, d, 0), (0, 0, 2.0), spacing), (0.9, 0.9, 0.85)),
    ]
    for i in range(nx):
        for j in range(ny):
            lo = np.array([0.6 + 2 * i, 0.6 + 2 * j, 0.0])
            ex, ey, ez = np.diag(rng.uniform([0.4, 0.4, 0.4], [0.8, 0.8, 0.9]))
            color = rng.uniform(0.1, 0.9, 3)
            faces = ((lo + ez, ex, ey), (lo, ex, ez), (lo + ey, ex, ez), (lo, ey, ez), (lo + ex, ey, ez))
            for origin, u, v in faces:  # no bottom face: it would coincide with the floor
                surfaces.append((sample_rect(origin, u, v, spacing), color))
    points = np.concatenate([pts for pts, _ in surfaces])
    colors = np.concatenate([np.broadcast_to(col, pts.shape) for pts, col in surfaces])
    surface = np.concatenate([np.full(len(pts), k) for k, (pts, _) in enumerate(surfaces)])
    points = points + rng.normal(0, 0.002, points.shape)
    colors = np.clip(colors + rng.normal(0, 0.02, colors.shape), 0, 1)
    return points.astype(np.float32), colors.astype(np.float32), surface


def purity(segments: np.ndarray, surface: np.ndarray) -> float:
    """Fraction of points whose segment's majority surface is their own surface."""
    joint = np.zeros((segments.max() + 1, surface.max() + 1), dtype=np.int64)
    np.add.at(joint, (segments, surface), 1)
    return joint.max(axis=1).sum() / len(segments)


def test_segment_points_splits_planes_from_boxes(backend):
    points, colors, surface = room_scene(1, 1)
    seg = segment_points(points, colors)
    assert seg.dtype == np.int64 and seg.shape == (len(points),)
    assert set(np.unique(seg)) == set(range(seg.max() + 1))
    assert purity(seg, surface) > 0.95
    # Most of each surface lies in segments that belong to it: floor, wall, box top are apart.
    majority = {k: np.bincount(seg[surface == k]).argmax() for k in (0, 1, 3)}
    assert len(set(majority.values())) == 3


def test_segment_points_count_grows_with_scene_size():
    small = segment_points(*room_scene(1, 1)[:2])
    large = segment_points(*room_scene(2, 2)[:2])
    assert large.max() + 1 > 2 * (small.max() + 1)


def test_segment_points_shares_ids_within_a_voxel_and_accepts_no_colors():
    points, _, surface = room_scene(1, 1)
    seg = segment_points(points, None, voxel_size=0.05)
    keys = np.floor(points / 0.05).astype(np.int64)
    _, voxel = np.unique(keys, axis=0, return_inverse=True)
    per_voxel = np.unique(np.stack([voxel.reshape(-1), seg], 1), axis=0)
    assert len(per_voxel) == voxel.max() + 1
    assert purity(seg, surface) > 0.9


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"points": np.zeros((5, 2)), "colors": None}, "points"),
        ({"points": np.zeros((5, 3)), "colors": np.zeros((4, 3))}, "colors"),
        ({"points": np.zeros((5, 3)), "colors": None, "voxel_size": 0.0}, "voxel_size"),
        ({"points": np.zeros((5, 3)), "colors": None, "radius_voxels": 0.5}, "radius_voxels"),
    ],
)
def test_segment_points_rejects_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        segment_points(**kwargs)


def test_estimate_normals_closed_form_matches_eigh_and_handles_degenerate_neighbourhoods():
    from scipy.spatial import cKDTree

    from uniseg3d_model.superpoints import estimate_normals

    rng = np.random.default_rng(3)
    plane = np.c_[rng.random((400, 2)), 0.002 * rng.normal(size=400)]
    blob = rng.normal(size=(300, 3)) + 10
    line = np.c_[np.linspace(0, 1, 50), np.zeros(50), np.zeros(50)] + 20
    same = np.zeros((20, 3)) + 30  # coincident points: any unit vector is acceptable
    points = np.concatenate([plane, blob, line, same])
    _, nidx = cKDTree(points).query(points, k=16)
    normals = estimate_normals(points, nidx)
    assert np.isfinite(normals).all() and np.allclose(np.linalg.norm(normals, axis=1), 1.0)
    nb = points[nidx] - points[nidx].mean(axis=1, keepdims=True)
    evals, evecs = np.linalg.eigh(np.matmul(nb.transpose(0, 2, 1), nb))
    separated = (evals[:, 1] - evals[:, 0]) > 1e-3 * evals[:, 2]
    assert separated[:700].mean() > 0.95
    dots = np.abs(np.einsum("ij,ij->i", normals, evecs[:, :, 0]))
    assert dots[separated].min() > 0.999
    assert np.abs(normals[:400, 2]).min() > 0.9  # the noisy plane's normals point along z


def test_voxel_neighbour_pairs_match_brute_force():
    from uniseg3d_model.superpoints import voxel_neighbour_pairs

    rng = np.random.default_rng(4)
    keys = np.unique(rng.integers(-6, 6, (300, 3)), axis=0)
    for radius in (1.0, 1.5, 2.0):
        a, b = voxel_neighbour_pairs(keys, radius)
        got = {tuple(sorted(pair)) for pair in zip(a.tolist(), b.tolist())}
        assert len(got) == len(a)  # every unordered pair exactly once
        d2 = ((keys[:, None, :] - keys[None, :, :]) ** 2).sum(-1)
        i, j = np.nonzero(np.triu(d2 <= radius * radius, k=1))
        assert got == set(zip(i.tolist(), j.tolist()))


def test_segment_points_handles_tiny_inputs():
    assert segment_points(np.zeros((0, 3)), None).shape == (0,)
    assert segment_points(np.zeros((1, 3)), np.ones((1, 3))).tolist() == [0]
    two_far = segment_points(np.array([[0.0, 0, 0], [1.0, 0, 0]]), None, min_verts=1)
    assert sorted(two_far.tolist()) == [0, 1]
