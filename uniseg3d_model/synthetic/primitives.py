"""Triangle meshes of primitives (boxes, cylinders, planes) with a bounded edge length.

ScanNet's ``_vh_clean_2`` meshes have vertices every few centimetres; the primitives here are
subdivided so that no edge is longer than ``spacing`` (metres), which gives the graph
segmentation and the point sampling a comparable density.

All functions return ``(vertices (V, 3) float64 metres, faces (F, 3) int64)`` with faces
wound counter-clockwise seen from outside (outward normals by the right-hand rule).
"""

from __future__ import annotations

import math

import numpy as np

Mesh = tuple[np.ndarray, np.ndarray]


def _check_spacing(spacing: float) -> None:
    if not spacing > 0:
        raise ValueError(f"spacing must be > 0 metres, got {spacing}")


def grid_quad(origin: np.ndarray, du: np.ndarray, dv: np.ndarray, spacing: float) -> Mesh:
    """A planar parallelogram ``origin + s*du + t*dv`` (s, t in [0, 1]) as a triangle grid.

    The normal of the triangles is ``du x dv``. Cells are at most ``spacing`` long per side.
    """
    _check_spacing(spacing)
    origin, du, dv = (np.asarray(x, dtype=np.float64) for x in (origin, du, dv))
    nu = max(1, math.ceil(np.linalg.norm(du) / spacing - 1e-9))
    nv = max(1, math.ceil(np.linalg.norm(dv) / spacing - 1e-9))
    s = np.linspace(0.0, 1.0, nu + 1)
    t = np.linspace(0.0, 1.0, nv + 1)
    ss, tt = np.meshgrid(s, t, indexing="ij")  # (nu+1, nv+1)
    verts = origin + ss.reshape(-1, 1) * du + tt.reshape(-1, 1) * dv
    idx = np.arange((nu + 1) * (nv + 1)).reshape(nu + 1, nv + 1)
    a, b = idx[:-1, :-1].ravel(), idx[1:, :-1].ravel()
    c, d = idx[1:, 1:].ravel(), idx[:-1, 1:].ravel()
    faces = np.concatenate([np.stack([a, b, c], 1), np.stack([a, c, d], 1)])
    return verts, faces.astype(np.int64)


def merge_meshes(meshes: list[Mesh]) -> Mesh:
    """Concatenate meshes, offsetting face indices."""
    verts, faces, offset = [], [], 0
    for v, f in meshes:
        verts.append(v)
        faces.append(f + offset)
        offset += len(v)
    if not verts:
        return np.zeros((0, 3)), np.zeros((0, 3), dtype=np.int64)
    return np.concatenate(verts), np.concatenate(faces)


def weld(verts: np.ndarray, faces: np.ndarray, tol: float = 1e-6) -> Mesh:
    """Merge vertices closer than ``tol`` (on a grid) and drop faces that became degenerate.

    Vertex order is the order of first occurrence, so the result is deterministic.
    """
    keys = np.round(verts / tol).astype(np.int64)
    _, first, inverse = np.unique(keys, axis=0, return_index=True, return_inverse=True)
    inverse = inverse.reshape(-1)
    # Renumber unique vertices by first occurrence (np.unique sorts lexicographically).
    order = np.argsort(first, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    new_faces = rank[inverse][faces]
    keep = (
        (new_faces[:, 0] != new_faces[:, 1])
        & (new_faces[:, 1] != new_faces[:, 2])
        & (new_faces[:, 0] != new_faces[:, 2])
    )
    return verts[first[order]], new_faces[keep]


def box(size: tuple[float, float, float] | np.ndarray, spacing: float, center_bottom: bool = True) -> Mesh:
    """A closed axis-aligned box of extents ``size`` (sx, sy, sz) metres.

    With ``center_bottom`` the box spans x in [-sx/2, sx/2], y in [-sy/2, sy/2], z in [0, sz];
    otherwise it is centred at the origin.
    """
    sx, sy, sz = (float(x) for x in size)
    if min(sx, sy, sz) <= 0:
        raise ValueError(f"box size must be positive, got {(sx, sy, sz)}")
    lo = np.array([-sx / 2, -sy / 2, 0.0 if center_bottom else -sz / 2])
    ex, ey, ez = np.array([sx, 0, 0.0]), np.array([0, sy, 0.0]), np.array([0, 0, sz])
    quads = [
        grid_quad(lo, ey, ex, spacing),  # bottom, normal -z
        grid_quad(lo + ez, ex, ey, spacing),  # top, +z
        grid_quad(lo, ex, ez, spacing),  # front (y min), -y
        grid_quad(lo + ey, ez, ex, spacing),  # back (y max), +y
        grid_quad(lo, ez, ey, spacing),  # left (x min), -x
        grid_quad(lo + ex, ey, ez, spacing),  # right (x max), +x
    ]
    return weld(*merge_meshes(quads))


def cylinder(radius: float, height: float, spacing: float) -> Mesh:
    """A closed cylinder around the z axis, z in [0, height], with capped ends."""
    _check_spacing(spacing)
    if radius <= 0 or height <= 0:
        raise ValueError(f"cylinder radius and height must be positive, got {radius}, {height}")
    n_theta = max(8, math.ceil(2 * math.pi * radius / spacing))
    n_z = max(1, math.ceil(height / spacing - 1e-9))
    n_r = max(1, math.ceil(radius / spacing - 1e-9))
    theta = np.linspace(0.0, 2 * math.pi, n_theta, endpoint=False)
    ring = np.stack([np.cos(theta), np.sin(theta)], 1)  # (T, 2)

    def strip(rows: np.ndarray) -> np.ndarray:
        """Quad strip between consecutive rows of T vertices each (rows: (R, T) vertex ids)."""
        a = rows[:-1]
        b = np.roll(rows[:-1], -1, axis=1)
        c = np.roll(rows[1:], -1, axis=1)
        d = rows[1:]
        a, b, c, d = (x.ravel() for x in (a, b, c, d))
        return np.concatenate([np.stack([a, b, c], 1), np.stack([a, c, d], 1)])

    z = np.linspace(0.0, height, n_z + 1)
    side_v = np.concatenate([np.column_stack([radius * ring, np.full(n_theta, zz)]) for zz in z])
    side_f = strip(np.arange(len(side_v)).reshape(n_z + 1, n_theta))
    meshes = [(side_v, side_f)]
    radii = np.linspace(0.0, radius, n_r + 1)
    for zz, up in ((0.0, False), (height, True)):
        cap_v = np.concatenate([np.column_stack([r * ring, np.full(n_theta, zz)]) for r in radii])
        cap_f = strip(np.arange(len(cap_v)).reshape(n_r + 1, n_theta))
        if up:  # the strip winds clockwise seen from +z
            cap_f = cap_f[:, ::-1]
        meshes.append((cap_v, cap_f))
    return weld(*merge_meshes(meshes))


def rotation_z(yaw: float) -> np.ndarray:
    """(3, 3) rotation about +z by ``yaw`` radians; exact for multiples of 90 degrees."""
    quarter = yaw / (math.pi / 2)
    if abs(quarter - round(quarter)) < 1e-12:
        c, s = ((1.0, 0.0), (0.0, 1.0), (-1.0, 0.0), (0.0, -1.0))[round(quarter) % 4]
    else:
        c, s = math.cos(yaw), math.sin(yaw)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def transform(verts: np.ndarray, yaw: float = 0.0, translation: np.ndarray | None = None) -> np.ndarray:
    """Rotate (N, 3) points about z by ``yaw`` and then translate."""
    out = verts @ rotation_z(yaw).T
    if translation is not None:
        out = out + np.asarray(translation, dtype=np.float64)
    return out
