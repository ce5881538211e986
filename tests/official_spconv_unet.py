"""Reference for tests and benchmarks: the official UniSeg3D backbone built from spconv's own
modules, with the official module names, so its ``state_dict()`` has the released checkpoint's
keys (``input_conv.0.weight``, ``unet.blocks.block0.conv_branch.0.running_mean``, ...).

Written from the structure of ``uniseg3d/spconv_unet.py`` (SPFormer's U-Net, ``normalize_before``)
and ``UniSeg3D._init_layers``; needs ``spconv`` 2.x. Also: random scenes and random weights.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import spconv.pytorch as spconv
import torch
from torch import nn


def _bn(c: int, eps: float, momentum: float) -> nn.BatchNorm1d:
    return nn.BatchNorm1d(c, eps=eps, momentum=momentum)


class RefResidualBlock(spconv.SparseModule):
    def __init__(self, c_in: int, c: int, key: str, eps: float, momentum: float) -> None:
        super().__init__()
        if c_in == c:
            self.i_branch = spconv.SparseSequential(nn.Identity())
        else:
            self.i_branch = spconv.SparseSequential(spconv.SubMConv3d(c_in, c, kernel_size=1, bias=False))
        self.conv_branch = spconv.SparseSequential(
            _bn(c_in, eps, momentum),
            nn.ReLU(),
            spconv.SubMConv3d(c_in, c, kernel_size=3, padding=1, bias=False, indice_key=key),
            _bn(c, eps, momentum),
            nn.ReLU(),
            spconv.SubMConv3d(c, c, kernel_size=3, padding=1, bias=False, indice_key=key),
        )

    def forward(self, x):
        identity = spconv.SparseConvTensor(x.features, x.indices, x.spatial_shape, x.batch_size)
        out = self.conv_branch(x)
        return out.replace_feature(out.features + self.i_branch(identity).features)


class RefUNet(nn.Module):
    def __init__(self, planes, block_reps: int = 2, level: int = 1, eps: float = 1e-4, momentum: float = 0.1):
        super().__init__()
        self.planes = tuple(planes)
        p0 = planes[0]
        self.blocks = spconv.SparseSequential(
            OrderedDict(
                (f"block{i}", RefResidualBlock(p0, p0, f"subm{level}", eps, momentum))
                for i in range(block_reps)
            )
        )
        if len(planes) > 1:
            p1 = planes[1]
            self.conv = spconv.SparseSequential(
                _bn(p0, eps, momentum),
                nn.ReLU(),
                spconv.SparseConv3d(p0, p1, kernel_size=2, stride=2, bias=False, indice_key=f"spconv{level}"),
            )
            self.u = RefUNet(planes[1:], block_reps, level + 1, eps, momentum)
            self.deconv = spconv.SparseSequential(
                _bn(p1, eps, momentum),
                nn.ReLU(),
                spconv.SparseInverseConv3d(p1, p0, kernel_size=2, bias=False, indice_key=f"spconv{level}"),
            )
            self.blocks_tail = spconv.SparseSequential(
                OrderedDict(
                    (f"block{i}", RefResidualBlock(p0 * (2 - i), p0, f"subm{level}", eps, momentum))
                    for i in range(block_reps)
                )
            )

    def forward(self, x):
        out = self.blocks(x)
        identity = spconv.SparseConvTensor(out.features, out.indices, out.spatial_shape, out.batch_size)
        if len(self.planes) > 1:
            dec = self.deconv(self.u(self.conv(out)))
            out = out.replace_feature(torch.cat((identity.features, dec.features), dim=1))
            out = self.blocks_tail(out)
        return out


class RefBackbone(nn.Module):
    """``input_conv`` + ``unet`` + ``output_layer`` as top-level modules of UniSeg3D."""

    def __init__(self, in_channels: int = 6, planes=(32, 64, 96, 128, 160), block_reps: int = 2) -> None:
        super().__init__()
        self.input_conv = spconv.SparseSequential(
            spconv.SubMConv3d(
                in_channels, planes[0], kernel_size=3, padding=1, bias=False, indice_key="subm1"
            )
        )
        self.unet = RefUNet(planes, block_reps)
        self.output_layer = spconv.SparseSequential(
            nn.BatchNorm1d(planes[0], eps=1e-4, momentum=0.1), nn.ReLU()
        )

    def forward(self, coords: torch.Tensor, feats: torch.Tensor, spatial_shape) -> torch.Tensor:
        """coords (N, 4) int ``[b, x, y, z]`` >= 0, feats (N, C), spatial_shape 3 ints -> (N, planes[0])."""
        x = spconv.SparseConvTensor(
            feats,
            coords.to(torch.int32).contiguous(),
            [int(s) for s in spatial_shape],
            int(coords[:, 0].max()) + 1,
        )
        return self.output_layer(self.unet(self.input_conv(x))).features


def randomize(net: nn.Module, seed: int = 0) -> nn.Module:
    """Random conv weights (std 1/sqrt(fan_in)) and BN affine + running statistics; eval mode."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in net.state_dict().items():
            if name.endswith("num_batches_tracked"):
                t.fill_(int(torch.randint(1, 1000, (1,), generator=g)))
            elif name.endswith("running_var"):
                t.copy_(torch.rand(t.shape, generator=g) * 1.5 + 0.25)
            elif name.endswith("running_mean") or name.endswith("bias"):
                t.copy_(torch.randn(t.shape, generator=g) * 0.2)
            elif t.ndim == 1:  # BN weight
                t.copy_(torch.rand(t.shape, generator=g) * 0.8 + 0.6)
            else:  # conv weight (C_out, k, k, k, C_in)
                fan_in = t[0].numel()
                t.copy_(torch.randn(t.shape, generator=g) / fan_in**0.5)
    return net.eval()


def random_scene(n_points: int, size_m: float = 2.0, seed: int = 0, voxel: float = 0.02) -> torch.Tensor:
    """(M, 3) int32 unique voxel coordinates anchored at 0: points on a floor, two walls and a
    few boxes inside a ``size_m`` room (a surface-like scene, like a scan)."""
    rng = np.random.default_rng(seed)
    part = rng.integers(0, 4, n_points)
    u, v = rng.uniform(0, size_m, n_points), rng.uniform(0, size_m, n_points)
    h = rng.uniform(0, 0.6 * size_m, n_points)
    pts = np.where(
        (part == 0)[:, None],
        np.c_[u, v, np.zeros(n_points)],
        np.where((part == 1)[:, None], np.c_[u, np.zeros(n_points), h], np.c_[np.zeros(n_points), v, h]),
    )
    boxes = part == 3
    centre = rng.uniform(0.2 * size_m, 0.8 * size_m, (4, 2))[rng.integers(0, 4, n_points)]
    pts[boxes] = np.c_[centre + rng.uniform(-0.2, 0.2, (n_points, 2)), rng.uniform(0, 0.5, n_points)][boxes]
    vox = np.unique(np.floor(pts / voxel).astype(np.int64), axis=0)
    vox -= vox.min(0)
    return torch.from_numpy(vox).to(torch.int32)


def random_features(n: int, seed: int = 0, channels: int = 6) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, channels, generator=g) * 2 - 1
