"""Point-splat renderer for figures: top-down and perspective views to PNG.

Pure numpy (no display, no GL): points are projected, drawn as square splats
of ``radius`` pixels, and the nearest point wins each pixel (z-buffer by
sorting). Used by the demo to draw panoptic results and query masks next to
ground truth on machines without a screen.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np

BACKGROUND = (255, 255, 255)


def _splat(u: np.ndarray, v: np.ndarray, depth: np.ndarray, colors: np.ndarray, height: int, width: int,
           radius: int) -> np.ndarray:
    """Draw points at integer pixel (u, v) keeping the smallest depth. colors: (N, 3) uint8."""
    image = np.empty((height, width, 3), np.uint8)
    image[:] = BACKGROUND
    offsets = np.arange(-radius, radius + 1)
    du, dv = np.meshgrid(offsets, offsets)
    uu = (u[:, None] + du.ravel()[None]).ravel()
    vv = (v[:, None] + dv.ravel()[None]).ravel()
    dd = np.repeat(depth, du.size)
    cc = np.repeat(np.arange(len(u)), du.size)
    inside = (uu >= 0) & (uu < width) & (vv >= 0) & (vv < height)
    uu, vv, dd, cc = uu[inside], vv[inside], dd[inside], cc[inside]
    pixel = vv * width + uu
    # nearest first: sort by (pixel, depth) and keep the first entry per pixel
    order = np.lexsort((dd, pixel))
    pixel, cc = pixel[order], cc[order]
    first = np.ones(len(pixel), bool)
    first[1:] = pixel[1:] != pixel[:-1]
    flat = image.reshape(-1, 3)
    flat[pixel[first]] = colors[cc[first]]
    return image


def _as_uint8(colors: np.ndarray) -> np.ndarray:
    colors = np.asarray(colors)
    if colors.dtype == np.uint8:
        return colors
    return np.clip(np.round(colors * 255.0), 0, 255).astype(np.uint8)


def project_top_down(points: np.ndarray, size: int, radius: int,
                     bounds: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Pixel (column u, row v) of ``points`` (N, 3) in :func:`render_top_down`'s image
    (``size`` px, ``bounds`` the framing). Returns two (N,) int64 arrays (may fall outside)."""
    points = np.asarray(points, np.float64).reshape(-1, 3)
    lo, hi = np.asarray(bounds[0], np.float64), np.asarray(bounds[1], np.float64)
    extent = max(float(hi[0] - lo[0]), float(hi[1] - lo[1]), 1e-6)
    scale = (size - 2 * radius - 1) / extent
    u = np.round((points[:, 0] - lo[0]) * scale).astype(np.int64) + radius
    v = (size - 1 - radius) - np.round((points[:, 1] - lo[1]) * scale).astype(np.int64)
    return u, v


def render_top_down(points: np.ndarray, colors: np.ndarray, size: int = 480, radius: int = 1,
                    bounds: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """Orthographic view from above (map frame, z up; image up = +y).

    points: (N, 3) float metres; colors: (N, 3) float [0, 1] or uint8.
    bounds: optional (min_xyz, max_xyz) so several renders share one framing.
    Returns (size, size, 3) uint8.
    """
    points = np.asarray(points, np.float64)
    if bounds is None:
        bounds = (points.min(0), points.max(0))
    u, v = project_top_down(points, size, radius, bounds)
    return _splat(u, v, -points[:, 2], _as_uint8(colors), size, size, radius)


def look_at(
    eye: np.ndarray, target: np.ndarray, up: tuple[float, float, float] = (0.0, 0.0, 1.0)
) -> np.ndarray:
    """4x4 camera-to-world pose of an optical-frame camera (z forward, x right, y down)."""
    up = np.asarray(up, np.float64)
    eye = np.asarray(eye, np.float64)
    forward = np.asarray(target, np.float64) - eye
    forward /= np.linalg.norm(forward)
    right = np.cross(forward, up)
    if np.linalg.norm(right) < 1e-9:
        right = np.cross(forward, np.array([0.0, 1.0, 0.0]))
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    pose = np.eye(4)
    pose[:3, 0], pose[:3, 1], pose[:3, 2], pose[:3, 3] = right, down, forward, eye
    return pose


def default_perspective_pose(points: np.ndarray) -> np.ndarray:
    """A three-quarter view from above one corner of the scene's bounding box."""
    lo, hi = np.asarray(points).min(0), np.asarray(points).max(0)
    center = (lo + hi) / 2
    diag = hi - lo
    eye = center + np.array([-0.75 * diag[0], -0.95 * diag[1], 1.1 * max(diag[0], diag[1])])
    return look_at(eye, center)


def project_perspective(points: np.ndarray, pose: np.ndarray, width: int, height: int,
                        fov_deg: float = 60.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pixel (column u, row v) and depth [m] of ``points`` (N, 3) seen from ``pose`` (4x4
    camera-to-world, optical frame) as :func:`render_perspective` draws them. Returns (N,) u, v
    (int64) and depth (float64; <= 1e-3 means behind the camera, u / v are then meaningless)."""
    points = np.asarray(points, np.float64).reshape(-1, 3)
    world_to_cam = np.linalg.inv(pose)
    cam = points @ world_to_cam[:3, :3].T + world_to_cam[:3, 3]
    depth = cam[:, 2]
    z = np.where(depth > 1e-3, depth, 1.0)
    f = 0.5 * width / np.tan(np.radians(fov_deg) / 2)
    u = np.round(f * cam[:, 0] / z + (width - 1) / 2).astype(np.int64)
    v = np.round(f * cam[:, 1] / z + (height - 1) / 2).astype(np.int64)
    return u, v, depth


def render_perspective(points: np.ndarray, colors: np.ndarray, pose: np.ndarray, width: int = 640,
                       height: int = 480, fov_deg: float = 60.0, radius: int = 1) -> np.ndarray:
    """Pinhole view from ``pose`` (4x4 camera-to-world, optical frame). Returns (H, W, 3) uint8."""
    u, v, depth = project_perspective(points, pose, width, height, fov_deg)
    front = depth > 1e-3
    return _splat(u[front], v[front], depth[front], _as_uint8(colors)[front], height, width, radius)


def side_by_side(*images: np.ndarray, gap: int = 8) -> np.ndarray:
    """Concatenate equally tall images horizontally with a white gap."""
    height = max(im.shape[0] for im in images)
    parts = []
    for i, im in enumerate(images):
        pad = np.full((height, im.shape[1], 3), 255, np.uint8)
        pad[: im.shape[0]] = im
        parts.append(pad)
        if i < len(images) - 1:
            parts.append(np.full((height, gap, 3), 255, np.uint8))
    return np.concatenate(parts, axis=1)


def write_png(path: str | Path, image: np.ndarray) -> Path:
    """Write an (H, W, 3) uint8 RGB image as PNG (zlib, no extra dependency)."""
    image = np.ascontiguousarray(image, dtype=np.uint8)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be (H, W, 3) uint8, got shape {image.shape}")
    h, w = image.shape[:2]
    raw = np.concatenate([np.zeros((h, 1), np.uint8), image.reshape(h, w * 3)], axis=1).tobytes()

    def chunk(tag: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(tag + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", crc)

    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
    png += chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b"")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png)
    return path
