"""Training augmentations for indoor scenes (the UniSeg3D ScanNet pipeline and our extras).

The official training pipeline (configs/uniseg3d_1xb4_scannet_scanrefer_scannet200_unified.py,
``train_pipeline``) runs, in this order: ``GlobalRotScaleTrans`` (rotation about z in
[-3.14, 3.14], isotropic scale in [0.8, 1.2], translation N(0, 0.1) m per axis; no flips),
colour normalisation, the prompt generators, and last ``ElasticTransfrom``
(transforms_3d.py ~238-311), which writes ``elastic_coords``: the points in voxel units with a
two-scale elastic distortion, used only to place points into voxels; the point features (colour,
xyz minus the scene mean) keep the undistorted coordinates. :func:`augment_scene` reproduces
that order; the defaults of :class:`AugmentConfig` are that recipe. Flips, colour auto-contrast,
colour jitter and elastic distortion of the points themselves (``elastic_target="points"``) are
our named options, off by default.

All functions are per scene, vectorized, and draw from a ``numpy.random.Generator`` so a seed
reproduces them exactly. They never reorder or drop points, so per-point labels (semantic,
instance, superpoints) stay valid unchanged.

points: (N, 3) float32 metres, z up; colors: (N, 3) float32 in [0, 1].
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.interpolate import RegularGridInterpolator
from scipy.ndimage import convolve

ELASTIC_TARGETS = ("voxels", "points")


@dataclass
class AugmentConfig:
    """Defaults: the official UniSeg3D ScanNet training pipeline (GlobalRotScaleTrans + ElasticTransfrom)."""

    rotate_z: float = np.pi  # uniform angle in [-rotate_z, rotate_z] about z (radians)
    flip_x_p: float = 0.0  # probability to mirror x (ours; the official pipeline has no flips)
    flip_y_p: float = 0.0
    scale: tuple[float, float] = (0.8, 1.2)  # isotropic scale range
    translate_std: float = 0.1  # metres, per axis
    elastic_p: float = 0.5
    # two-scale elastic distortion, (granularity, magnitude) in voxels of ``voxel_size``
    elastic: tuple[tuple[float, float], ...] = ((6.0, 40.0), (20.0, 160.0))
    voxel_size: float = 0.02
    # "voxels" (official): the distortion only moves the voxel placement (SceneSample.voxel_points);
    # "points" (ours): it moves the points themselves (features and prompts see it too)
    elastic_target: str = "voxels"
    auto_contrast_p: float = 0.0  # ours
    color_jitter_std: float = 0.0  # ours: additive Gaussian on [0, 1] colors

    def __post_init__(self) -> None:
        if self.elastic_target not in ELASTIC_TARGETS:
            raise ValueError(f"elastic_target must be one of {ELASTIC_TARGETS}, got {self.elastic_target!r}")


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


def elastic_distortion(coords: np.ndarray, rng: np.random.Generator, granularity: float,
                       magnitude: float) -> np.ndarray:
    """The official elastic distortion (transforms_3d.py ``ElasticTransfrom.elastic``).

    coords: (N, 3) in voxel units (any origin). A noise grid of ``|coords|.max // gran + 3`` cells
    per axis, centred on the origin with spacing ``2 * gran`` (the official ``linspace(-(b-1)g,
    (b-1)g, b)``), three float32 standard-normal fields (one per displacement axis) each blurred by
    a 3-tap box along x, y, z and again along x, y, z (zero padding), trilinearly interpolated (0
    outside) and scaled by ``magnitude``. Returns ``coords + displacement`` (N, 3) float64.
    """
    x = np.asarray(coords, np.float64)
    dims = (np.abs(x).max(0).astype(np.int32) // granularity).astype(int) + 3
    noise = [rng.standard_normal(tuple(dims), dtype=np.float32) for _ in range(3)]
    kernels = [np.full(shape, 1.0 / 3.0, np.float32) for shape in ((3, 1, 1), (1, 3, 1), (1, 1, 3))]
    for kernel in kernels + kernels:
        noise = [convolve(n, kernel, mode="constant", cval=0.0) for n in noise]
    axes = [np.linspace(-(b - 1) * granularity, (b - 1) * granularity, b) for b in dims]
    fields = [RegularGridInterpolator(axes, n, bounds_error=False, fill_value=0.0) for n in noise]
    disp = np.stack([f(x) for f in fields], 1)
    return x + disp * magnitude


def auto_contrast(colors: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Stretch colors to the full [0, 1] range per channel, blended with the original by a random factor."""
    lo, hi = colors.min(0, keepdims=True), colors.max(0, keepdims=True)
    stretched = (colors - lo) / np.maximum(hi - lo, 1e-6)
    blend = rng.uniform()
    return ((1.0 - blend) * colors + blend * stretched).astype(colors.dtype)


def rot_scale_trans(points: np.ndarray, rng: np.random.Generator, cfg: AugmentConfig) -> np.ndarray:
    """Optional flips, then mmdet3d's ``GlobalRotScaleTrans`` order: rotate about z, scale, translate."""
    pts = np.asarray(points, np.float32)
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
    return pts.astype(np.float32)


def elastic_points(points: np.ndarray, rng: np.random.Generator, cfg: AugmentConfig) -> np.ndarray | None:
    """With probability ``elastic_p``: ``points`` (N, 3) metres distorted by every (gran, mag) of
    ``cfg.elastic`` in voxel units of ``cfg.voxel_size``, back in metres; else None."""
    if not (cfg.elastic_p > 0 and len(points) and rng.uniform() < cfg.elastic_p):
        return None
    vox = np.asarray(points, np.float64) / cfg.voxel_size
    for gran, mag in cfg.elastic:
        vox = elastic_distortion(vox, rng, gran, mag)
    return (vox * cfg.voxel_size).astype(np.float32)


def augment_scene(points: np.ndarray, colors: np.ndarray, rng: np.random.Generator,
                  cfg: AugmentConfig | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """The whole training augmentation: ``(points, colors, voxel_points)``.

    points, colors: (N, 3) float32, same shapes as the input. voxel_points: (N, 3) float32
    metres where the elastic distortion placed the points for voxelization (official recipe),
    or None when no distortion was drawn or ``elastic_target == "points"`` (then ``points``
    themselves carry it). Draw order: flips, rotation, scale, translation, colours, elastic.
    """
    cfg = cfg or AugmentConfig()
    pts = rot_scale_trans(points, rng, cfg)
    cols = np.asarray(colors, np.float32)
    if cfg.auto_contrast_p > 0 and len(cols) and rng.uniform() < cfg.auto_contrast_p:
        cols = auto_contrast(cols, rng)
    if cfg.color_jitter_std > 0:
        cols = cols + rng.normal(0.0, cfg.color_jitter_std, cols.shape).astype(np.float32)
    cols = np.clip(cols, 0.0, 1.0).astype(np.float32)
    distorted = elastic_points(pts, rng, cfg)
    if cfg.elastic_target == "points" and distorted is not None:
        return distorted, cols, None
    return pts, cols, distorted
