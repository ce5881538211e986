"""The network's input: colored points -> voxel coordinates and per-voxel features.

As the released UniSeg3D (``uniseg3d.py`` ``collate`` + ``NormalizePointsColor_`` in the data
pipeline) does it:

* point features, in this order: RGB mapped to [-1, 1] (``(c - 127.5) / 127.5`` for 8-bit
  colors, ``2 c - 1`` for our [0, 1] colors), then (``use_xyz``) xyz minus the scene mean;
* voxel coordinates ``floor((p - p.min(0)) / voxel_size)`` (``origin="scene_min"``: the grid
  is anchored at the scene minimum, MinkowskiEngine's ``batch_sparse_collate`` truncates the
  non-negative float coordinates) or ``floor(p / voxel_size)`` (``origin="world"``: our
  models, a grid fixed in the scene frame);
* per-voxel features = mean of its points' features (MinkowskiEngine's
  ``UNWEIGHTED_AVERAGE`` quantisation); ``point_to_voxel`` maps every point back to its voxel
  (the official ``inverse_mapping``), so per-point features are ``voxel_feats[point_to_voxel]``
  and superpoint features their mean over each superpoint (``scatter_mean``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from uniseg3d_model.sparse import voxelize

ORIGINS = ("world", "scene_min")


@dataclass
class VoxelInput:
    """coords (M, 3) int32 voxel indices; feats (M, F) float32 per-voxel mean features;
    point_to_voxel (N,) int64; center (3,) float32 scene mean (metres)."""

    coords: torch.Tensor
    feats: torch.Tensor
    point_to_voxel: torch.Tensor
    center: torch.Tensor


def point_features(points: torch.Tensor, colors: torch.Tensor, use_xyz: bool) -> torch.Tensor:
    """points (N, 3) metres, colors (N, 3) in [0, 1] -> (N, 3 or 6): rgb in [-1, 1], then xyz
    minus the scene mean."""
    feats = colors * 2.0 - 1.0
    if use_xyz:
        feats = torch.cat([feats, points - points.mean(0)], dim=1)
    return feats


def voxel_input(
    points: torch.Tensor,
    colors: torch.Tensor,
    voxel_size: float,
    use_xyz: bool,
    origin: str = "world",
    grid_points: torch.Tensor | None = None,
) -> VoxelInput:
    """points (N, 3) float32 metres, colors (N, 3) float32 in [0, 1] -> :class:`VoxelInput` on
    the points' device. ``grid_points`` (N, 3) metres, when given, places the points in the grid
    instead of ``points`` while the features still come from ``points``: the official training
    applies its elastic distortion to the voxel coordinates only (uniseg3d.py ``collate`` with
    ``elastic_coords``)."""
    if origin not in ORIGINS:
        raise ValueError(f"voxel origin must be one of {ORIGINS}, got {origin!r}")
    if points.shape[0] == 0:
        raise ValueError("no points to voxelize")
    feats = point_features(points, colors, use_xyz)
    place = points if grid_points is None else grid_points
    if place.shape != points.shape:
        raise ValueError(f"grid_points must be shaped {tuple(points.shape)}, got {tuple(place.shape)}")
    if origin == "scene_min":
        # float32 arithmetic in the official order: (p - min) / voxel_size, then truncate (>= 0)
        grid = ((place - place.min(0).values) / voxel_size).floor().to(torch.int64)
        coords, inverse = torch.unique(grid, dim=0, return_inverse=True)
        coords = coords.to(torch.int32)
    else:
        coords, inverse = voxelize(place, voxel_size)
        coords, inverse = coords.to(points.device), inverse.to(points.device)
    m = coords.shape[0]
    counts = torch.bincount(inverse, minlength=m).clamp_min(1).unsqueeze(1).to(feats.dtype)
    vfeat = feats.new_zeros(m, feats.shape[1]).index_add_(0, inverse, feats) / counts
    return VoxelInput(coords, vfeat, inverse, points.mean(0))
