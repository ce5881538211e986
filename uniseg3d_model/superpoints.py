"""Superpoints: graph-based over-segmentation of meshes and point clouds, and pooling.

Superpoints are the units the UniSeg3D decoder reasons over (masks are predicted per
superpoint, then broadcast to points).

* :func:`segment_mesh` follows ScanNet's ``Segmentator`` tool (the one that writes
  ``*_vh_clean_2.0.010000.segs.json``): Felzenszwalb-Huttenlocher graph segmentation over
  the mesh edges, weighted by vertex-normal dissimilarity, then a pass that merges segments
  smaller than ``min_verts`` into a neighbour. Defaults match the tool (kThresh 0.01,
  segMinVerts 20).
* :func:`segment_points` runs the same algorithm over the voxel-adjacency graph of a voxelized
  point cloud (a fused online map has no mesh), with PCA normals and a colour term.
* :func:`pool` averages per-point features into per-superpoint features (autograd-friendly).

The graphs are built with numpy; the inherently sequential union-find pass over the sorted
edges is :func:`uniseg3d_model.graph_segmentation.felzenszwalb_segment` (numba-compiled when
numba is installed, a tight Python loop otherwise).
"""

from __future__ import annotations

import time

import numpy as np
import torch

from uniseg3d_model.graph_segmentation import felzenszwalb_segment, sort_edges


def _as_float_array(name: str, value: object, cols: int) -> np.ndarray:
    arr = np.asarray(value, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != cols:
        raise ValueError(f"{name} must have shape (N, {cols}), got {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return arr


def _relabel(roots: np.ndarray) -> np.ndarray:
    """Map arbitrary component ids to 0..S-1, numbered in order of first appearance."""
    _, first, inverse = np.unique(roots, return_index=True, return_inverse=True)
    order = np.argsort(np.argsort(first, kind="stable"), kind="stable")
    return order[inverse].astype(np.int64)


def mesh_vertex_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Segmentator-style vertex normals: the mean of the unit normals of incident faces.

    vertices: (V, 3) float; faces: (F, 3) int. Returns (V, 3) float64; like the tool,
    the mean is *not* renormalised (it shrinks where incident faces disagree). Degenerate
    (zero-area) faces contribute nothing (the tool would produce NaN there).
    """
    v = np.asarray(vertices, dtype=np.float64)
    f = np.asarray(faces, dtype=np.int64)
    p1, p2, p3 = v[f[:, 0]], v[f[:, 1]], v[f[:, 2]]
    n = np.cross(p2 - p1, p3 - p1)
    norm = np.linalg.norm(n, axis=1, keepdims=True)
    valid = norm[:, 0] > 0
    n = np.where(valid[:, None], n / np.where(norm > 0, norm, 1.0), 0.0)
    idx = f[valid].reshape(-1)
    counts = np.bincount(idx, minlength=len(v)).astype(np.float64)
    face_n = np.repeat(n[valid], 3, axis=0)
    sums = np.stack([np.bincount(idx, weights=face_n[:, k], minlength=len(v)) for k in range(3)], axis=1)
    return sums / np.maximum(counts, 1.0)[:, None]


def mesh_edge_weights(
    vertices: np.ndarray, normals: np.ndarray, a: np.ndarray, b: np.ndarray
) -> np.ndarray:
    """Segmentator's edge weight ``1 - n_a.n_b``, squared where the edge is convex.

    The edge a->b counts as convex when ``n_b . (p_b - p_a) > 0``, which makes normal changes
    across convex creases cheaper than across concave ones (as in the ScanNet tool).
    """
    d = vertices[b] - vertices[a]
    dd = np.linalg.norm(d, axis=1)
    w = 1.0 - np.einsum("ij,ij->i", normals[a], normals[b])
    with np.errstate(invalid="ignore", divide="ignore"):
        dot2 = np.einsum("ij,ij->i", normals[b], d) / dd
    convex = (dd > 0) & (dot2 > 0)
    return np.where(convex, w * w, w)


def segment_mesh(
    vertices: np.ndarray, faces: np.ndarray, k_thresh: float = 0.01, min_verts: int = 20
) -> np.ndarray:
    """Over-segment a triangle mesh as ScanNet's ``segmentator`` does.

    vertices: (V, 3) float, metres; faces: (F, 3) int vertex indices.
    k_thresh: Felzenszwalb constant (larger -> larger segments); min_verts: segments with
    fewer vertices are merged into a neighbour along the cheapest edges.
    Returns (V,) int64 segment ids in 0..S-1 (numbered by first vertex). Vertices used by no
    face stay singleton segments, as in the tool.
    """
    v = _as_float_array("vertices", vertices, 3)
    f = np.asarray(faces)
    if f.ndim != 2 or f.shape[1] != 3:
        raise ValueError(f"faces must have shape (F, 3), got {f.shape}")
    if f.size and not np.issubdtype(f.dtype, np.integer):
        raise ValueError(f"faces must hold integer vertex indices, got dtype {f.dtype}")
    f = f.astype(np.int64)
    if f.size and (f.min() < 0 or f.max() >= len(v)):
        raise ValueError(f"faces index vertices out of range [0, {len(v)}): min {f.min()}, max {f.max()}")
    if not k_thresh > 0:
        raise ValueError(f"k_thresh must be > 0, got {k_thresh}")
    if min_verts < 0:
        raise ValueError(f"min_verts must be >= 0, got {min_verts}")
    if len(v) == 0:
        return np.zeros(0, dtype=np.int64)
    normals = mesh_vertex_normals(v, f)
    # Three directed edges per face, in the tool's order: (1,2), (1,3), (3,2).
    a = np.stack([f[:, 0], f[:, 0], f[:, 2]], axis=1).reshape(-1)
    b = np.stack([f[:, 1], f[:, 2], f[:, 1]], axis=1).reshape(-1)
    w = mesh_edge_weights(v, normals, a, b)
    roots = felzenszwalb_segment(len(v), a, b, w, float(k_thresh), int(min_verts))
    return _relabel(roots)


def smallest_eigenvectors(cov: list[list[np.ndarray]]) -> np.ndarray:
    """Unit eigenvectors of the smallest eigenvalue of M symmetric 3x3 matrices.

    cov: nested 3x3 list of (M,) arrays (``cov[i][j]``). Closed form: trigonometric
    eigenvalues, then the widest cross product of two rows of ``cov - lambda I``; the few
    ill-conditioned rows (two smallest eigenvalues nearly equal, e.g. collinear or coincident
    points) fall back to ``numpy.linalg.eigh``. Returns (M, 3), sign arbitrary."""
    c = cov
    q = (c[0][0] + c[1][1] + c[2][2]) / 3.0
    p1 = c[0][1] ** 2 + c[0][2] ** 2 + c[1][2] ** 2
    p = np.sqrt(((c[0][0] - q) ** 2 + (c[1][1] - q) ** 2 + (c[2][2] - q) ** 2 + 2.0 * p1) / 6.0)
    safe_p = np.where(p > 0, p, 1.0)
    b = [[(c[i][j] - (q if i == j else 0.0)) / safe_p for j in range(3)] for i in range(3)]
    det = (
        b[0][0] * (b[1][1] * b[2][2] - b[1][2] * b[2][1])
        - b[0][1] * (b[1][0] * b[2][2] - b[1][2] * b[2][0])
        + b[0][2] * (b[1][0] * b[2][1] - b[1][1] * b[2][0])
    )
    phi = np.arccos(np.clip(det / 2.0, -1.0, 1.0)) / 3.0
    smallest = q + 2.0 * p * np.cos(phi + 2.0 * np.pi / 3.0)
    rows = [np.stack([c[i][0], c[i][1], c[i][2]], axis=1) for i in range(3)]
    for i in range(3):
        rows[i][:, i] -= smallest
    crosses = np.stack([np.cross(rows[0], rows[1]), np.cross(rows[0], rows[2]), np.cross(rows[1], rows[2])])
    norms = np.linalg.norm(crosses, axis=2)  # (3, M)
    best = norms.argmax(axis=0)
    arange = np.arange(len(q))
    normals = crosses[best, arange] / np.maximum(norms[best, arange], 1e-300)[:, None]
    scale = np.maximum(c[0][0] + c[1][1] + c[2][2], 1e-300)
    bad = np.flatnonzero(norms[best, arange] <= 1e-6 * scale**2)
    if len(bad):
        mats = np.stack([np.stack([c[i][j][bad] for j in range(3)], axis=1) for i in range(3)], axis=1)
        normals[bad] = np.linalg.eigh(mats)[1][:, :, 0]
    return normals


def estimate_normals(points: np.ndarray, neighbours: np.ndarray) -> np.ndarray:
    """Unoriented PCA normals. points: (M, 3); neighbours: (M, k) indices into points
    (each row including the point itself). Returns (M, 3) unit vectors, sign arbitrary."""
    # Gathering each coordinate separately is several times faster than points[neighbours].
    xyz = [np.ascontiguousarray(points[:, i], dtype=np.float64)[neighbours] for i in range(3)]  # 3 x (M, k)
    mean = [x.mean(axis=1) for x in xyz]
    c = [[None] * 3 for _ in range(3)]
    for i in range(3):
        for j in range(i, 3):
            c[i][j] = c[j][i] = (xyz[i] * xyz[j]).mean(axis=1) - mean[i] * mean[j]
    return smallest_eigenvectors(c)


def voxel_neighbour_pairs(keys: np.ndarray, radius: float) -> tuple[np.ndarray, np.ndarray]:
    """Pairs of occupied voxels whose integer coordinates are at most ``radius`` apart.

    keys: (M, 3) int unique voxel coordinates. Returns (a, b) int64 index arrays, each
    unordered pair once. Lookups are binary searches in the sorted linearised keys."""
    r = int(np.floor(radius))
    offsets = [
        (dx, dy, dz)
        for dx in range(-r, r + 1)
        for dy in range(-r, r + 1)
        for dz in range(-r, r + 1)
        if 0 < dx * dx + dy * dy + dz * dz <= radius * radius and (dx, dy, dz) > (0, 0, 0)
    ]
    k = keys - keys.min(axis=0) + r  # pad by r so that key + offset never wraps around
    ext = k.max(axis=0) + r + 1
    linear = (k[:, 0] * ext[1] + k[:, 1]) * ext[2] + k[:, 2]
    order = np.argsort(linear, kind="stable")
    sorted_linear = linear[order]
    a, b = [], []
    for dx, dy, dz in offsets:
        target = sorted_linear + (dx * ext[1] + dy) * ext[2] + dz
        pos = np.minimum(np.searchsorted(sorted_linear, target), len(linear) - 1)
        hit = sorted_linear[pos] == target
        a.append(order[hit])
        b.append(order[pos[hit]])
    return np.concatenate(a), np.concatenate(b)


def warm_up_segment_points(**kwargs: float | int | None) -> float:
    """Run :func:`segment_points` (with ``kwargs``, e.g. the engine's settings) on a small generated
    cloud, so that its numba kernels are compiled before the first real map; returns the seconds."""
    t0 = time.perf_counter()
    u, v = (a.ravel() * 0.02 for a in np.meshgrid(np.arange(12), np.arange(12)))
    zero = np.zeros_like(u)
    points = np.concatenate([np.column_stack([u, v, zero]), np.column_stack([zero, u, v])])  # floor, wall
    points = points.astype(np.float32)
    segment_points(points, np.full_like(points, 0.5), **kwargs)
    return time.perf_counter() - t0


def segment_points(
    points: np.ndarray,
    colors: np.ndarray | None,
    voxel_size: float = 0.02,
    radius_voxels: float = 2.0,
    k_thresh: float = 0.03,
    min_verts: int = 20,
    color_weight: float = 0.5,
    max_superpoints: int | None = None,
) -> np.ndarray:
    """Over-segment a coloured point cloud (e.g. a fused online map) into superpoints.

    points: (N, 3) float, metres; colors: (N, 3) float in [0, 1] or None.
    The cloud is voxelized at ``voxel_size`` (mean position/colour per voxel). Voxels whose
    grid coordinates are at most ``radius_voxels`` apart are neighbours: a voxel's normal is
    the PCA normal of its centroid and its neighbours' (unoriented), and every neighbour
    pair is a graph edge with weight ``1 - |n_a . n_b| + color_weight * |c_a - c_b| / sqrt(3)``.
    Then the Felzenszwalb pass with ``k_thresh`` and the merge of segments with fewer than
    ``min_verts`` voxels, as in :func:`segment_mesh`.
    ``max_superpoints`` bounds S whatever the density or noise (None: no bound): the minimum
    segment size doubles from ``min_verts`` until the Felzenszwalb pass yields at most that many,
    then segments still below it (isolated clusters with no edge to merge along) join the segment
    of the nearest voxel of a large one, so every segment keeps >= m / max_superpoints voxels.
    Returns (N,) int64 ids in 0..S-1; points in the same voxel share a superpoint.
    """
    p = _as_float_array("points", points, 3)
    c = np.zeros_like(p) if colors is None else _as_float_array("colors", colors, 3)
    if len(c) != len(p):
        raise ValueError(f"colors must have {len(p)} rows to match points, got {len(c)}")
    for name, value in {"voxel_size": voxel_size, "k_thresh": k_thresh}.items():
        if not value > 0:
            raise ValueError(f"{name} must be > 0, got {value}")
    if not 1.0 <= radius_voxels <= 4.0:
        raise ValueError(f"radius_voxels must be in [1, 4], got {radius_voxels}")
    if color_weight < 0 or min_verts < 0:
        raise ValueError(f"color_weight and min_verts must be >= 0, got {color_weight}, {min_verts}")
    if max_superpoints is not None and max_superpoints < 1:
        raise ValueError(f"max_superpoints must be >= 1 or None, got {max_superpoints}")
    if len(p) == 0:
        return np.zeros(0, dtype=np.int64)

    keys = np.floor(p / voxel_size).astype(np.int64)
    keys -= keys.min(axis=0)
    extent = keys.max(axis=0) + 1
    linear = (keys[:, 0] * extent[1] + keys[:, 1]) * extent[2] + keys[:, 2]
    voxel_linear, point_to_voxel = np.unique(linear, return_inverse=True)
    point_to_voxel = point_to_voxel.reshape(-1)
    m = len(voxel_linear)
    counts = np.bincount(point_to_voxel, minlength=m).astype(np.float64)
    centroids = [np.bincount(point_to_voxel, p[:, k], m) / counts for k in range(3)]
    vox_colors = np.stack([np.bincount(point_to_voxel, c[:, k], m) for k in range(3)], 1) / counts[:, None]
    yz, z = np.divmod(voxel_linear, extent[2])
    voxel_keys = np.stack([yz // extent[1], yz % extent[1], z], axis=1)
    a, b = voxel_neighbour_pairs(voxel_keys, radius_voxels)

    # Covariance of each voxel's neighbourhood (itself + its neighbours) from sums over edges.
    n = 1.0 + np.bincount(a, minlength=m) + np.bincount(b, minlength=m)

    def neighbourhood_mean(values: np.ndarray) -> np.ndarray:
        return (values + np.bincount(a, values[b], m) + np.bincount(b, values[a], m)) / n

    mean = [neighbourhood_mean(x) for x in centroids]
    cov = [[None] * 3 for _ in range(3)]
    for i in range(3):
        for j in range(i, 3):
            cov[i][j] = cov[j][i] = neighbourhood_mean(centroids[i] * centroids[j]) - mean[i] * mean[j]
    normals = smallest_eigenvectors(cov)
    w = 1.0 - np.abs(np.einsum("ij,ij->i", normals[a], normals[b]))
    w = w + color_weight * np.linalg.norm(vox_colors[a] - vox_colors[b], axis=1) / np.sqrt(3.0)
    a, b, w = sort_edges(a, b, w)  # once: the bound below segments the same graph again
    roots = felzenszwalb_segment(m, a, b, w, float(k_thresh), int(min_verts), presorted=True)
    labels = _relabel(roots)
    if max_superpoints is not None and labels.max() + 1 > max_superpoints:
        labels = _bounded(m, a, b, w, float(k_thresh), int(min_verts), int(max_superpoints), centroids)
    return labels[point_to_voxel]


def _bounded(m: int, a, b, w, k_thresh: float, min_verts: int, budget: int, centroids) -> np.ndarray:
    """(m,) labels with at most ``budget`` segments (see :func:`segment_points`); edges sorted."""
    from scipy.spatial import cKDTree

    size = max(min_verts, 1)
    while True:
        size *= 2
        labels = _relabel(felzenszwalb_segment(m, a, b, w, k_thresh, size, presorted=True))
        if labels.max() + 1 <= budget or size * budget >= m:
            break
    floor = max(size, -(-m // budget))  # every kept segment has >= m / budget voxels
    counts = np.bincount(labels)
    big = counts[labels] >= floor
    if not big.any():
        return np.zeros(m, np.int64)
    if not big.all():
        xyz = np.stack(centroids, axis=1)
        _, nearest = cKDTree(xyz[big]).query(xyz[~big])
        labels[~big] = labels[big][nearest]
    return _relabel(labels)


def pool(
    features: torch.Tensor, superpoints: torch.Tensor, num_superpoints: int | None = None
) -> torch.Tensor:
    """Mean of per-point features over each superpoint (differentiable).

    features: (N, C) float; superpoints: (N,) long ids in [0, S). Returns (S, C) with
    S = num_superpoints or max id + 1; superpoints with no point get zeros.
    """
    if features.dim() != 2:
        raise ValueError(f"features must be (N, C), got shape {tuple(features.shape)}")
    sp = torch.as_tensor(superpoints, device=features.device)
    if sp.dim() != 1 or sp.shape[0] != features.shape[0]:
        raise ValueError(f"superpoints must be ({features.shape[0]},), got shape {tuple(sp.shape)}")
    if sp.dtype.is_floating_point or sp.dtype == torch.bool:
        raise ValueError(f"superpoints must be an integer tensor, got {sp.dtype}")
    sp = sp.long()
    if num_superpoints is None:
        num_superpoints = int(sp.max()) + 1 if sp.numel() else 0
    if sp.numel() and (int(sp.min()) < 0 or int(sp.max()) >= num_superpoints):
        raise ValueError(
            f"superpoint ids must lie in [0, {num_superpoints}), got [{int(sp.min())}, {int(sp.max())}]"
        )
    out = features.new_zeros((num_superpoints, features.shape[1]))
    out = out.index_add(0, sp, features)
    count = torch.bincount(sp, minlength=num_superpoints).clamp_min(1).to(features.dtype)
    return out / count[:, None]


__all__ = [
    "estimate_normals",
    "smallest_eigenvectors",
    "voxel_neighbour_pairs",
    "mesh_vertex_normals",
    "pool",
    "segment_mesh",
    "segment_points",
]
