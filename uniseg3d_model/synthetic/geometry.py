"""Oriented boxes with a yaw about z, and their overlap and distance tests.

A box is given by its centre (3,), extents ``size`` (3,) along its own axes and ``yaw``
(radians about +z, map frame, metres). Two boxes overlap when their z intervals overlap and
their footprints (2-D oriented rectangles) overlap, by the separating axis theorem.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from uniseg3d_model.synthetic.primitives import rotation_z


@dataclass(frozen=True)
class OrientedBox:
    center: np.ndarray  # (3,) metres
    size: np.ndarray  # (3,) extents along the box axes
    yaw: float = 0.0

    @property
    def zmin(self) -> float:
        return float(self.center[2] - self.size[2] / 2)

    @property
    def zmax(self) -> float:
        return float(self.center[2] + self.size[2] / 2)

    def footprint(self) -> np.ndarray:
        """(4, 2) corners of the footprint, counter-clockwise."""
        hx, hy = self.size[0] / 2, self.size[1] / 2
        local = np.array([[-hx, -hy], [hx, -hy], [hx, hy], [-hx, hy]])
        return local @ rotation_z(self.yaw)[:2, :2].T + self.center[:2]

    def contains(self, points: np.ndarray, margin: float = 0.0) -> np.ndarray:
        """(N,) bool: points (N, 3) strictly inside the box shrunk by ``margin``."""
        local = (points - self.center) @ rotation_z(self.yaw)
        return np.all(np.abs(local) < self.size / 2 - margin, axis=1)

    def grown(self, margin: float) -> OrientedBox:
        return OrientedBox(self.center, self.size + 2 * margin, self.yaw)


def _rects_overlap(a: np.ndarray, b: np.ndarray) -> bool:
    """Separating-axis test for two convex quadrilaterals (4, 2)."""
    for poly in (a, b):
        edges = np.roll(poly, -1, axis=0) - poly
        normals = np.stack([-edges[:, 1], edges[:, 0]], 1)
        pa, pb = a @ normals.T, b @ normals.T  # (4, 4) projections
        if np.any((pa.max(0) <= pb.min(0)) | (pb.max(0) <= pa.min(0))):
            return False
    return True


def boxes_overlap(a: OrientedBox, b: OrientedBox, margin: float = 0.0) -> bool:
    """True when the boxes, each grown by ``margin / 2``, intersect with positive volume."""
    if a.zmax + margin <= b.zmin or b.zmax + margin <= a.zmin:
        return False
    return _rects_overlap(a.grown(margin / 2).footprint(), b.grown(margin / 2).footprint())


def _perimeter_samples(corners: np.ndarray, n: int = 12) -> np.ndarray:
    t = np.linspace(0.0, 1.0, n, endpoint=False)[:, None, None]
    nxt = np.roll(corners, -1, axis=0)
    return (corners[None] + t * (nxt - corners)[None]).reshape(-1, 2)


def footprint_gap(a: OrientedBox, b: OrientedBox) -> float:
    """Approximate horizontal gap (metres) between two footprints; 0 when they overlap."""
    fa, fb = a.footprint(), b.footprint()
    if _rects_overlap(fa, fb):
        return 0.0
    pa, pb = _perimeter_samples(fa), _perimeter_samples(fb)
    return float(np.sqrt(((pa[:, None] - pb[None]) ** 2).sum(-1)).min())
