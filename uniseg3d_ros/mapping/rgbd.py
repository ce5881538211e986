"""Back-projection of RGB-D images into colored points (pure numpy, no ROS).

Frames follow REP 103 for camera *optical* frames: x right, y down, z forward.
A pixel ``(u, v)`` (column, row, integer coordinates at pixel centres, the
OpenCV / ``sensor_msgs/CameraInfo`` convention) with depth ``z`` metres maps to::

    y = (v - cy) / fy * z,   x = (u - cx - skew * (v - cy) / fy) / fx * z,   z = z

(``skew = K[0, 1]``, almost always 0).

Depth images come either as ``uint16`` millimetres (``16UC1``, the
``depth_scale`` default is 0.001 m per unit) or ``float32`` metres (``32FC1``,
default scale 1.0). Zero, NaN and infinite depths are invalid and dropped.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np

from uniseg3d_ros.mapping.cloud_types import check_unit_colors

__all__ = ["depth_to_points", "intrinsics_matrix"]


def intrinsics_matrix(K: np.ndarray | Sequence[float]) -> np.ndarray:
    """Return a validated (3, 3) float64 pinhole matrix.

    ``K`` is a (3, 3) array or the 9-element row-major ``CameraInfo.k``.
    Raises ``ValueError`` naming the bad entry (non-finite, fx/fy <= 0, skew row).
    """
    k = np.asarray(K, dtype=np.float64)
    if k.size != 9:
        raise ValueError(f"K must have 9 elements (3x3 or CameraInfo.k), got shape {k.shape}")
    k = k.reshape(3, 3)
    if not np.all(np.isfinite(k)):
        raise ValueError(f"K contains non-finite values: {k.tolist()}")
    if k[0, 0] <= 0 or k[1, 1] <= 0:
        raise ValueError(f"K focal lengths must be > 0, got fx={k[0, 0]} fy={k[1, 1]}")
    if not np.allclose(k[2], [0.0, 0.0, 1.0]):
        raise ValueError(f"K last row must be [0, 0, 1], got {k[2].tolist()}")
    return k


def _color_to_float(color: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """(H, W, 3|4) uint8 or float [0,1] -> (H, W, 3) view/array; validates shape."""
    c = np.asarray(color)
    if c.ndim != 3 or c.shape[2] not in (3, 4):
        raise ValueError(f"color must be (H, W, 3) RGB or (H, W, 4) RGBA, got shape {c.shape}")
    if c.shape[:2] != shape:
        raise ValueError(
            f"color size {c.shape[1]}x{c.shape[0]} does not match depth size {shape[1]}x{shape[0]} "
            "(register color to depth first)"
        )
    if c.dtype != np.uint8 and not np.issubdtype(c.dtype, np.floating):
        raise ValueError(f"color dtype must be uint8 or float in [0, 1], got {c.dtype}")
    check_unit_colors(c[:, :, :3], "color")
    return c[:, :, :3]


def depth_to_points(
    depth: np.ndarray,
    color: np.ndarray | None,
    K: np.ndarray | Sequence[float],
    *,
    depth_scale: float | None = None,
    min_depth: float = 0.1,
    max_depth: float = 6.0,
    stride: int = 1,
    D: Sequence[float] | np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Back-project a depth image (and optional registered color) to points.

    Args:
        depth: (H, W) ``uint16`` (units of ``depth_scale``, default 1 mm) or float (metres unless
            ``depth_scale`` given). 0 / NaN / inf are invalid.
        color: (H, W, 3) uint8 RGB (or (H, W, 4) RGBA, alpha ignored, or float in [0, 1]), registered
            to the depth image, or ``None``.
        K: (3, 3) pinhole matrix or the 9-element ``CameraInfo.k``.
        depth_scale: metres per depth unit; default 0.001 for integer depth, 1.0 for float depth.
        min_depth, max_depth: keep points with ``min_depth <= z <= max_depth`` (metres).
        stride: take every ``stride``-th row and column (>= 1); pixel coordinates stay full-resolution.
        D: ``CameraInfo.d`` distortion coefficients. They are NOT applied; a non-zero D issues a
            ``UserWarning`` (rectify the image upstream, e.g. image_proc).

    Returns:
        points: (M, 3) float32, metres, camera optical frame (z forward).
        colors: (M, 3) float32 in [0, 1] (same order), or ``None`` when ``color`` is ``None``.
    """
    d = np.asarray(depth)
    if d.ndim != 2:
        raise ValueError(f"depth must be a 2-D (H, W) image, got shape {d.shape}")
    if not (np.issubdtype(d.dtype, np.integer) or np.issubdtype(d.dtype, np.floating)):
        raise ValueError(f"depth dtype must be uint16 (mm) or float32 (m), got {d.dtype}")
    if int(stride) != stride or stride < 1:
        raise ValueError(f"stride must be a positive integer, got {stride!r}")
    stride = int(stride)
    if not (np.isfinite(min_depth) and min_depth >= 0):
        raise ValueError(f"min_depth must be finite and >= 0, got {min_depth}")
    if not (max_depth > min_depth):
        raise ValueError(f"max_depth must be > min_depth, got max_depth={max_depth} min_depth={min_depth}")
    k = intrinsics_matrix(K)
    if D is not None:
        dist = np.asarray(D, dtype=np.float64).ravel()
        if dist.size and np.any(dist != 0):
            warnings.warn(
                f"non-zero distortion D={dist.tolist()} ignored: depth_to_points assumes a rectified image",
                UserWarning,
                stacklevel=2,
            )
    if depth_scale is None:
        depth_scale = 0.001 if np.issubdtype(d.dtype, np.integer) else 1.0
    if not (np.isfinite(depth_scale) and depth_scale > 0):
        raise ValueError(f"depth_scale must be finite and > 0, got {depth_scale}")
    c = _color_to_float(color, d.shape) if color is not None else None

    ds = d[::stride, ::stride]
    z = ds.astype(np.float32)
    if depth_scale != 1.0:
        inv = 1.0 / depth_scale
        if abs(inv - round(inv)) < 1e-9 * inv:  # e.g. 1 mm: divide by 1000 so 6000 mm is exactly 6.0 m
            z /= np.float32(round(inv))
        else:
            z *= np.float32(depth_scale)
    # NaN compares False, so NaN/inf/0 all fail this test (inf fails z <= max_depth).
    with np.errstate(invalid="ignore"):
        valid = (z > 0) & (z >= min_depth) & (z <= max_depth)
    rows, cols = np.nonzero(valid)
    zv = z[rows, cols]
    u = (cols * stride).astype(np.float32)
    v = (rows * stride).astype(np.float32)
    fx, fy, cx, cy, skew = (np.float32(k[0, 0]), np.float32(k[1, 1]), np.float32(k[0, 2]),
                            np.float32(k[1, 2]), np.float32(k[0, 1]))
    yn = (v - cy) / fy
    xn = (u - cx - skew * yn) / fx if skew != 0 else (u - cx) / fx
    pts = np.empty((zv.size, 3), dtype=np.float32)
    pts[:, 0] = xn * zv
    pts[:, 1] = yn * zv
    pts[:, 2] = zv
    if c is None:
        return pts, None
    cs = c[::stride, ::stride][rows, cols]
    if cs.dtype == np.uint8:
        cols_f = cs.astype(np.float32) * np.float32(1.0 / 255.0)
    else:
        cols_f = np.clip(cs.astype(np.float32), 0.0, 1.0)
    return pts, cols_f
