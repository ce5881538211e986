"""Reference of the official UniSeg3D input pipeline and spconv U-Net backbone, as DENSE-grid
torch ops driven by an official-named state dict (tests only; small scenes).

Official sources (dk-liang/UniSeg3D @ c272954):
- colours: loading.py:71-103 ``NormalizePointsColor_`` with color_mean 127.5 (config test
  pipeline) and color_std 127.5: rgb -> (rgb - 127.5) / 127.5.
- voxelization: uniseg3d.py:394-413 ``collate``: coordinates (xyz - xyz.min(0)) / voxel_size,
  made integer by MinkowskiEngine ``sparse_collate`` (``coord.int()``, truncation; the values are
  >= 0, so floor); per-point features hstack(rgb, xyz - xyz.mean(0)); ``TensorField.sparse()``
  with the default UNWEIGHTED_AVERAGE quantization: a voxel's features are the mean of its
  points' features; ``inverse_mapping`` maps each point to its voxel.
- backbone: uniseg3d.py:345-356, 372-374 (input_conv SubM 3^3 6->32; unet; output_layer BN+ReLU)
  and spconv_unet.py (pre-norm ResidualBlock, SpConvUNet with return_blocks; BN eps 1e-4).
- superpoint pooling: uniseg3d.py:375 ``scatter_mean(x.features[inverse_mapping], superpoints)``:
  the mean over POINTS (not voxels) of each superpoint.

spconv semantics, checked against spconv 2.3.8 (tests/test_official_reference.py):
- SubMConv3d k3 p1 = dense ``conv3d(padding=1)`` with weight ``W.permute(0, 4, 1, 2, 3)`` (KRSC
  ``(out, kx, ky, kz, in)``), read at the active sites only, the input zero elsewhere (spconv's
  CPU SubM agrees on sparse grids and is wrong on dense ones, so it is not the reference);
- SubMConv3d k1 (the ResidualBlock ``i_branch`` when widths change, i.e. ``blocks_tail.block0``)
  = ``x @ W.reshape(in, out)``: spconv's conv1x1 shortcut reinterprets the weight's memory
  (see :func:`subm_conv`); the released weights were trained that way;
- SparseConv3d k2 s2 = dense ``conv3d(stride=2)``; active outputs = sites with an active input
  in their 2x2x2 cell (coordinate // 2), limited to spconv's output spatial shape
  (S - 2) // 2 + 1: with an odd S (spatial shape = clip(max index + 1, 128), so any scene over
  2.56 m along an axis can have one) the last slice has no coarse site and is dropped;
- SparseInverseConv3d k2 (paired by indice_key) = ``conv_transpose3d(stride=2)`` with weight
  ``W.permute(4, 0, 1, 2, 3)``, read at the paired conv's input sites (zero at sites whose
  coarse cell was dropped).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

State = dict[str, torch.Tensor]
BN_EPS = 1e-4  # spconv_unet.py:28, :111 and uniseg3d.py:355


def normalize_colors(points: torch.Tensor) -> torch.Tensor:
    """points: (N, 6) xyz [m] + rgb in [0, 255] -> (N, 6) xyz + rgb in [-1, 1]."""
    return torch.cat([points[:, :3], (points[:, 3:] - 127.5) / 127.5], dim=1)


def voxelize(points: torch.Tensor, voxel_size: float = 0.02
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """points: (N, 6) xyz + normalised rgb, float32.

    Returns coords (V, 3) int64 voxel indices (sorted unique), feats (V, 6) float32 (mean rgb,
    mean xyz - scene mean), inverse (N,) int64 point -> voxel."""
    xyz = points[:, :3]
    grid = ((xyz - xyz.min(0)[0]) / voxel_size).int().long()
    point_feats = torch.hstack((points[:, 3:], xyz - xyz.mean(0)))
    coords, inverse = torch.unique(grid, dim=0, return_inverse=True)
    sums = torch.zeros(len(coords), point_feats.shape[1]).index_add_(0, inverse, point_feats)
    counts = torch.bincount(inverse, minlength=len(coords)).to(sums.dtype)
    return coords, sums / counts[:, None], inverse


def batch_norm(sd: State, prefix: str, x: torch.Tensor) -> torch.Tensor:
    """Eval BatchNorm1d over features x (n, C)."""
    mean, var = sd[prefix + "running_mean"], sd[prefix + "running_var"]
    return (x - mean) / torch.sqrt(var + BN_EPS) * sd[prefix + "weight"] + sd[prefix + "bias"]


def _dense(feats: torch.Tensor, coords: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
    out = feats.new_zeros(feats.shape[1], *dims)
    out[:, coords[:, 0], coords[:, 1], coords[:, 2]] = feats.T
    return out[None]


def _gather(dense: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    return dense[0][:, coords[:, 0], coords[:, 1], coords[:, 2]].T


def _even_dims(coords: torch.Tensor) -> tuple[int, ...]:
    """Smallest even per-axis grid covering coords (a stride-2 conv then sees every site)."""
    ext = coords.max(0)[0] + 1
    return tuple(int(e + e % 2) for e in ext)


def subm_conv(feats: torch.Tensor, coords: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Submanifold conv, kernel 3 (padding 1) or 1: (n, Cin) at coords -> (n, Cout).

    Kernel 1 is spconv's ``conv1x1`` path (spconv/pytorch/conv.py, every 2.x release:
    ``torch.mm(features, weight.view(in_channels, out_channels))``): the (out, 1, 1, 1, in)
    tensor's memory is read as a row-major (in, out) matrix, NOT as its KRSC shape says."""
    if weight.shape[1:4] == (1, 1, 1):
        return feats @ weight.reshape(weight.shape[-1], weight.shape[0])
    dense = _dense(feats, coords, _even_dims(coords))
    return _gather(F.conv3d(dense, weight.permute(0, 4, 1, 2, 3), padding=1), coords)


def coarse_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    """spconv output spatial shape of a k2 s2 p0 conv: (S - 2) // 2 + 1 per axis."""
    return tuple((s - 2) // 2 + 1 for s in shape)


def down_conv(feats: torch.Tensor, coords: torch.Tensor, shape: tuple[int, ...],
              weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """SparseConv3d k2 s2 on a spconv tensor of spatial ``shape``: -> (features at the coarse
    sites, coarse coords (m, 3)). A coarse site outside ``coarse_shape(shape)`` (the last slice
    of an odd axis) does not exist in spconv and is dropped."""
    coarse = torch.unique(coords // 2, dim=0)
    coarse = coarse[(coarse < torch.tensor(coarse_shape(shape))).all(1)]
    out = F.conv3d(_dense(feats, coords, _even_dims(coords)), weight.permute(0, 4, 1, 2, 3),
                   stride=2)
    return _gather(out, coarse), coarse


def inverse_conv(feats: torch.Tensor, coarse: torch.Tensor, fine: torch.Tensor,
                 weight: torch.Tensor) -> torch.Tensor:
    """SparseInverseConv3d k2 paired with a k2 s2 conv: coarse (m, C1) -> fine sites (n, C0);
    a fine site whose coarse cell was dropped gets zeros."""
    dims = _even_dims(fine)
    out = F.conv_transpose3d(_dense(feats, coarse, tuple(d // 2 for d in dims)),
                             weight.permute(4, 0, 1, 2, 3), stride=2)
    return _gather(out, fine)


def residual_block(sd: State, p: str, x: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """Pre-norm ResidualBlock (spconv_unet.py:24-91): conv_branch(x) + i_branch(x)."""
    y = torch.relu(batch_norm(sd, p + "conv_branch.0.", x))
    y = subm_conv(y, coords, sd[p + "conv_branch.2.weight"])
    y = torch.relu(batch_norm(sd, p + "conv_branch.3.", y))
    y = subm_conv(y, coords, sd[p + "conv_branch.5.weight"])
    identity = x
    if p + "i_branch.0.weight" in sd:
        identity = subm_conv(x, coords, sd[p + "i_branch.0.weight"])
    return y + identity


def unet(sd: State, p: str, x: torch.Tensor, coords: torch.Tensor, shape: tuple[int, ...]
         ) -> torch.Tensor:
    """SpConvUNet.forward (spconv_unet.py:201-236), one level and the levels below it;
    ``shape`` is the level's spconv spatial shape."""
    out = residual_block(sd, p + "blocks.block0.", x, coords)
    out = residual_block(sd, p + "blocks.block1.", out, coords)
    if p + "conv.2.weight" not in sd:
        return out
    d = torch.relu(batch_norm(sd, p + "conv.0.", out))
    d, coarse = down_conv(d, coords, shape, sd[p + "conv.2.weight"])
    d = unet(sd, p + "u.", d, coarse, coarse_shape(shape))
    d = torch.relu(batch_norm(sd, p + "deconv.0.", d))
    d = inverse_conv(d, coarse, coords, sd[p + "deconv.2.weight"])
    out = torch.cat((out, d), dim=1)
    out = residual_block(sd, p + "blocks_tail.block0.", out, coords)
    return residual_block(sd, p + "blocks_tail.block1.", out, coords)


def spatial_shape(coords: torch.Tensor, min_spatial_shape: int = 128) -> tuple[int, ...]:
    """uniseg3d.py:405-406: clip(max voxel index + 1, min_spatial_shape) per axis."""
    return tuple(max(int(m) + 1, min_spatial_shape) for m in coords.max(0)[0])


def backbone(sd: State, coords: torch.Tensor, feats: torch.Tensor,
             min_spatial_shape: int = 128) -> torch.Tensor:
    """input_conv -> unet -> output_layer (uniseg3d.py:372-374). (V, 6) -> (V, C)."""
    x = subm_conv(feats, coords, sd["input_conv.0.weight"])
    x = unet(sd, "unet.", x, coords, spatial_shape(coords, min_spatial_shape))
    return torch.relu(batch_norm(sd, "output_layer.0.", x))


def superpoint_features(voxel_feats: torch.Tensor, inverse: torch.Tensor,
                        superpoints: torch.Tensor) -> torch.Tensor:
    """scatter_mean over points: (V, C), (N,), (N,) ids -> (S = max id + 1, C)."""
    point_feats = voxel_feats[inverse]
    s = int(superpoints.max()) + 1
    sums = point_feats.new_zeros(s, point_feats.shape[1]).index_add_(0, superpoints, point_feats)
    counts = torch.bincount(superpoints, minlength=s).clamp(min=1).to(sums.dtype)
    return sums / counts[:, None]


def scene_superpoint_features(sd: State, points: torch.Tensor, superpoints: torch.Tensor,
                              voxel_size: float = 0.02, min_spatial_shape: int = 128
                              ) -> torch.Tensor:
    """Raw scene (N, 6: xyz m, rgb 0..255), superpoint ids (N,) -> (S, C) features."""
    coords, feats, inverse = voxelize(normalize_colors(points), voxel_size)
    voxel_feats = backbone(sd, coords, feats, min_spatial_shape)
    return superpoint_features(voxel_feats, inverse, superpoints)
