"""Training augmentations for indoor scenes (ScanNet practice: SPFormer / OneFormer3D / UniSeg3D).

All functions are per scene, vectorized, and draw from a ``numpy.random.Generator`` so a seed
reproduces them exactly. They never reorder or drop points, so per-point labels (semantic,
instance, superpoints) stay valid unchanged.

points: (N, 3) float32 metres, z up; colors: (N, 3) float32 in [0, 1].
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.interpolate import RegularGridInterpolator
from scipy.ndimage import uniform_filter


@dataclass
class AugmentConfig:
    """Defaults follow the UniSeg3D ScanNet training pipeline (GlobalRotScaleTrans + ElasticTransfrom)."""

    rotate_z: float = np.pi  # uniform angle in [-rotate_z, rotate_z] about z (radians)
    flip_x_p: float = 0.5  # probability to mirror x
    flip_y_p: float = 0.5
    scale: tuple[float, float] = (0.8, 1.2)  # isotropic scale range
    translate_std: float = 0.1  # metres, per axis
    elastic_p: float = 0.5
    # two-scale elastic distortion, (granularity, magnitude) in voxels of ``voxel_size``
    elastic: tuple[tuple[float, float], ...] = ((6.0, 40.0), (20.0, 160.0))
    voxel_size: float = 0.02
    auto_contrast_p: float = 0.2
    color_jitter_std: float = 0.05  # additive Gaussian on [0, 1] colors


def rotate_z(points: np.ndarray, angle: float) -> np.ndarray:
    """Rotate ``points`` (N, 3) about the z axis through the origin by ``angle`` radians."""
    c, s = np.cos(angle), np.sin(angle)
    rot = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]], dtype=np.float64)
    return (points.astype(np.float64) @ rot.T).astype(points.dtype)


def flip(points: np.ndarray, axis: int) -> np.ndarray:
    """Mirror ``points`` along ``axis`` (0: x, 1: y)."""
    out = points.copy()
    out[:, axis] = -out[:, axis]
    return out


def elastic_distortion(points: np.ndarray, rng: np.random.Generator, granularity: float,
                       magnitude: float) -> np.ndarray:
    """Smooth random displacement field: Gaussian noise on a grid of spacing ``granularity``,
    box-blurred (3 taps, twice, each axis) and trilinearly interpolated, scaled by ``magnitude``.
    Units are those of ``points``."""
    lo = points.min(0) - granularity
    shape = ((points.max(0) - lo) // granularity).astype(int) + 3
    noise = rng.standard_normal((*shape, 3))
    for _ in range(2):
        noise = uniform_filter(noise, size=(3, 3, 3, 1), mode="constant")
    axes = [lo[d] + granularity * np.arange(shape[d]) for d in range(3)]
    field = RegularGridInterpolator(axes, noise, bounds_error=False, fill_value=0.0)
    return (points + field(points) * magnitude).astype(points.dtype)


def auto_contrast(colors: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Stretch colors to the full [0, 1] range per channel, blended with the original by a random factor."""
    lo, hi = colors.min(0, keepdims=True), colors.max(0, keepdims=True)
    stretched = (colors - lo) / np.maximum(hi - lo, 1e-6)
    blend = rng.uniform()
    return ((1.0 - blend) * colors + blend * stretched).astype(colors.dtype)


def augment_scene(points: np.ndarray, colors: np.ndarray, rng: np.random.Generator,
                  cfg: AugmentConfig | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Apply the whole training augmentation: returns new ``(points, colors)`` of the same shapes."""
    cfg = cfg or AugmentConfig()
    pts = np.asarray(points, np.float32)
    cols = np.asarray(colors, np.float32)
    if cfg.elastic_p > 0 and len(pts) and rng.uniform() < cfg.elastic_p:
        vox = pts / cfg.voxel_size
        for gran, mag in cfg.elastic:
            vox = elastic_distortion(vox, rng, gran, mag)
        pts = (vox * cfg.voxel_size).astype(np.float32)
    if cfg.flip_x_p > 0 and rng.uniform() < cfg.flip_x_p:
        pts = flip(pts, 0)
    if cfg.flip_y_p > 0 and rng.uniform() < cfg.flip_y_p:
        pts = flip(pts, 1)
    if cfg.rotate_z > 0:
        pts = rotate_z(pts, rng.uniform(-cfg.rotate_z, cfg.rotate_z))
    if cfg.scale != (1.0, 1.0):
        pts = pts * np.float32(rng.uniform(*cfg.scale))
    if cfg.translate_std > 0:
        pts = pts + rng.normal(0.0, cfg.translate_std, 3).astype(np.float32)
    if cfg.auto_contrast_p > 0 and len(cols) and rng.uniform() < cfg.auto_contrast_p:
        cols = auto_contrast(cols, rng)
    if cfg.color_jitter_std > 0:
        cols = cols + rng.normal(0.0, cfg.color_jitter_std, cols.shape).astype(np.float32)
    return pts.astype(np.float32), np.clip(cols, 0.0, 1.0).astype(np.float32)
