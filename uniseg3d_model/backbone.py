"""Sparse 3D U-Net backbone (MinkUNet, Res16UNet34C family as used by OneFormer3D / Mask3D).

Layout (tensor stride in brackets), for ``planes = (p0..p7)``, ``layers = (l0..l7)``:

    conv0p1s1 (k=conv1_kernel_size) -> bn0 -> relu                        [1]  = out_p1 (init_dim)
    conv1p1s2 (k2 s2) -> bn1 -> relu -> block1 (l0 x BasicBlock, p0)      [2]  = out_b1p2
    conv2p2s2 -> bn2 -> relu -> block2 (l1, p1)                          [4]  = out_b2p4
    conv3p4s2 -> bn3 -> relu -> block3 (l2, p2)                          [8]  = out_b3p8
    conv4p8s2 -> bn4 -> relu -> block4 (l3, p3)                          [16]
    convtr4p16s2 (k2 s2, p4) -> bntr4 -> relu -> cat out_b3p8 -> block5  [8]
    convtr5p8s2  (p5) -> bntr5 -> relu -> cat out_b2p4 -> block6         [4]
    convtr6p4s2  (p6) -> bntr6 -> relu -> cat out_b1p2 -> block7         [2]
    convtr7p2s2  (p7) -> bntr7 -> relu -> cat out_p1   -> block8         [1]
    final (1x1, bias) -> out_channels                                    [1]

Module and parameter names equal the MinkowskiEngine implementation (``conv0p1s1.kernel``,
``block1.0.norm1.bn.weight``, ``block1.0.downsample.0.kernel``, ...), so a state dict moves
between the pure-PyTorch and the MinkowskiEngine backends.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from uniseg3d_model.sparse import SparseTensor
from uniseg3d_model.sparse.backend import BACKEND_NAMES, Backend, get_backend


@dataclass
class BackboneConfig:
    """in_channels: input feature width (6 = RGB + xyz, 3 = RGB).
    out_channels: width of the per-voxel output features (a 1x1 ``final`` conv); ``None`` keeps
    the last decoder width ``planes[7]`` and builds no ``final`` layer (OneFormer3D's usage).
    planes / layers: widths and BasicBlock counts of the 4 encoder and 4 decoder stages.
    init_dim: width of the stem conv; conv1_kernel_size: its kernel size.
    backend: 'auto' (MinkowskiEngine when it imports, else torch) | 'torch' | 'spconv' | 'minkowski'.
    """

    in_channels: int = 6
    out_channels: int | None = 32
    planes: tuple[int, ...] = (32, 64, 128, 256, 256, 128, 96, 96)
    layers: tuple[int, ...] = (2, 3, 4, 6, 2, 2, 2, 2)
    init_dim: int = 32
    conv1_kernel_size: int = 5
    bn_momentum: float = 0.02
    backend: str = "auto"

    def __post_init__(self) -> None:
        self.planes = tuple(int(p) for p in self.planes)
        self.layers = tuple(int(n) for n in self.layers)
        if len(self.planes) != 8 or min(self.planes) < 1:
            raise ValueError(f"planes must be 8 positive widths, got {self.planes}")
        if len(self.layers) != 8 or min(self.layers) < 1:
            raise ValueError(f"layers must be 8 positive block counts, got {self.layers}")
        for name in ("in_channels", "init_dim", "conv1_kernel_size"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)}")
        if self.out_channels is not None and int(self.out_channels) < 1:
            raise ValueError(f"out_channels must be positive or None, got {self.out_channels}")
        if not 0.0 < float(self.bn_momentum) <= 1.0:
            raise ValueError(f"bn_momentum must be in (0, 1], got {self.bn_momentum}")
        if self.backend not in BACKEND_NAMES:
            raise ValueError(f"backend must be one of {BACKEND_NAMES}, got {self.backend!r}")

    @property
    def feature_dim(self) -> int:
        """Width of the backbone's output features."""
        return self.planes[7] if self.out_channels is None else int(self.out_channels)

    @classmethod
    def res16unet34c(cls, **overrides) -> BackboneConfig:
        """Res16UNet34C as in OneFormer3D (the default)."""
        return cls(**overrides)

    @classmethod
    def small(cls, **overrides) -> BackboneConfig:
        """A light U-Net with the same topology for CPU tests and the embedded default model."""
        kw = dict(
            planes=(16, 32, 48, 64, 64, 48, 32, 32),
            layers=(1, 1, 1, 1, 1, 1, 1, 1),
            init_dim=16,
            conv1_kernel_size=3,
        )
        kw.update(overrides)
        return cls(**kw)


class BasicBlock(nn.Module):
    """conv3 - BN - ReLU - conv3 - BN, plus the (optionally projected) input, then ReLU."""

    def __init__(self, backend: Backend, inplanes: int, planes: int, bn_momentum: float) -> None:
        super().__init__()
        self._backend = backend
        self.conv1 = backend.Conv3d(inplanes, planes, kernel_size=3)
        self.norm1 = backend.BatchNorm(planes, momentum=bn_momentum)
        self.conv2 = backend.Conv3d(planes, planes, kernel_size=3)
        self.norm2 = backend.BatchNorm(planes, momentum=bn_momentum)
        self.downsample = None
        if inplanes != planes:
            self.downsample = nn.Sequential(
                backend.Conv3d(inplanes, planes, kernel_size=1),
                backend.BatchNorm(planes, momentum=bn_momentum),
            )

    def forward(self, x):
        relu = self._backend.relu
        out = relu(self.norm1(self.conv1(x)))
        out = self.norm2(self.conv2(out))
        residual = x if self.downsample is None else self.downsample(x)
        return relu(out + residual)


def _stage(backend: Backend, inplanes: int, planes: int, blocks: int, bn_momentum: float) -> nn.Sequential:
    layers = [BasicBlock(backend, inplanes, planes, bn_momentum)]
    layers += [BasicBlock(backend, planes, planes, bn_momentum) for _ in range(blocks - 1)]
    return nn.Sequential(*layers)


class MinkUNet(nn.Module):
    """``MinkUNet(cfg)(x: SparseTensor) -> SparseTensor`` with ``(N, cfg.feature_dim)`` features
    on ``x``'s coordinates, in ``x``'s row order (``x`` at tensor stride 1, features
    ``(N, cfg.in_channels)``, coordinates ``[batch, x, y, z]`` voxel indices)."""

    def __init__(self, cfg: BackboneConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.backend = get_backend(cfg.backend)
        b, p, n, m = self.backend, cfg.planes, cfg.layers, cfg.bn_momentum
        d0 = cfg.init_dim
        self.conv0p1s1 = b.Conv3d(cfg.in_channels, d0, kernel_size=cfg.conv1_kernel_size)
        self.bn0 = b.BatchNorm(d0, momentum=m)
        self.conv1p1s2 = b.Conv3d(d0, d0, kernel_size=2, stride=2)
        self.bn1 = b.BatchNorm(d0, momentum=m)
        self.block1 = _stage(b, d0, p[0], n[0], m)
        self.conv2p2s2 = b.Conv3d(p[0], p[0], kernel_size=2, stride=2)
        self.bn2 = b.BatchNorm(p[0], momentum=m)
        self.block2 = _stage(b, p[0], p[1], n[1], m)
        self.conv3p4s2 = b.Conv3d(p[1], p[1], kernel_size=2, stride=2)
        self.bn3 = b.BatchNorm(p[1], momentum=m)
        self.block3 = _stage(b, p[1], p[2], n[2], m)
        self.conv4p8s2 = b.Conv3d(p[2], p[2], kernel_size=2, stride=2)
        self.bn4 = b.BatchNorm(p[2], momentum=m)
        self.block4 = _stage(b, p[2], p[3], n[3], m)
        self.convtr4p16s2 = b.ConvTranspose3d(p[3], p[4], kernel_size=2, stride=2)
        self.bntr4 = b.BatchNorm(p[4], momentum=m)
        self.block5 = _stage(b, p[4] + p[2], p[4], n[4], m)
        self.convtr5p8s2 = b.ConvTranspose3d(p[4], p[5], kernel_size=2, stride=2)
        self.bntr5 = b.BatchNorm(p[5], momentum=m)
        self.block6 = _stage(b, p[5] + p[1], p[5], n[5], m)
        self.convtr6p4s2 = b.ConvTranspose3d(p[5], p[6], kernel_size=2, stride=2)
        self.bntr6 = b.BatchNorm(p[6], momentum=m)
        self.block7 = _stage(b, p[6] + p[0], p[6], n[6], m)
        self.convtr7p2s2 = b.ConvTranspose3d(p[6], p[7], kernel_size=2, stride=2)
        self.bntr7 = b.BatchNorm(p[7], momentum=m)
        self.block8 = _stage(b, p[7] + d0, p[7], n[7], m)
        self.final = None
        if cfg.out_channels is not None:
            self.final = b.Conv3d(p[7], int(cfg.out_channels), kernel_size=1, bias=True)

    def forward(self, x: SparseTensor) -> SparseTensor:
        if not isinstance(x, SparseTensor):
            raise ValueError(f"MinkUNet expects a SparseTensor, got {type(x).__name__}")
        if x.stride != 1:
            raise ValueError(f"MinkUNet input must be at tensor stride 1, got {x.stride}")
        if x.feats.shape[1] != self.cfg.in_channels:
            raise ValueError(
                f"MinkUNet: input has {x.feats.shape[1]} channels, cfg.in_channels={self.cfg.in_channels}"
            )
        relu, cat = self.backend.relu, self.backend.cat
        h = self.backend.to_native(x)
        out_p1 = relu(self.bn0(self.conv0p1s1(h)))
        out_b1p2 = self.block1(relu(self.bn1(self.conv1p1s2(out_p1))))
        out_b2p4 = self.block2(relu(self.bn2(self.conv2p2s2(out_b1p2))))
        out_b3p8 = self.block3(relu(self.bn3(self.conv3p4s2(out_b2p4))))
        out = self.block4(relu(self.bn4(self.conv4p8s2(out_b3p8))))
        out = self.block5(cat(relu(self.bntr4(self.convtr4p16s2(out))), out_b3p8))
        out = self.block6(cat(relu(self.bntr5(self.convtr5p8s2(out))), out_b2p4))
        out = self.block7(cat(relu(self.bntr6(self.convtr6p4s2(out))), out_b1p2))
        out = self.block8(cat(relu(self.bntr7(self.convtr7p2s2(out))), out_p1))
        if self.final is not None:
            out = self.final(out)
        return self.backend.from_native(out, x)


def make_input(
    voxel_coords: torch.Tensor, colors: torch.Tensor, xyz: torch.Tensor | None = None
) -> SparseTensor:
    """Backbone input from batched voxels.

    voxel_coords: (N, 4) int ``[batch, x, y, z]`` unique voxel indices (see ``sparse.voxelize``
    and ``sparse.batch_coords``); colors: (N, 3) float per-voxel colour features; xyz: optional
    (N, 3) float per-voxel position features (e.g. voxel centres in metres). Features are
    ``[colors, xyz]`` -> (N, 6), or colors alone -> (N, 3).
    """
    colors = torch.as_tensor(colors, dtype=torch.float32)
    n = voxel_coords.shape[0]
    if colors.shape != (n, 3):
        raise ValueError(f"colors must be ({n}, 3) to match voxel_coords, got {tuple(colors.shape)}")
    feats = colors
    if xyz is not None:
        xyz = torch.as_tensor(xyz, dtype=torch.float32, device=colors.device)
        if xyz.shape != (n, 3):
            raise ValueError(f"xyz must be ({n}, 3) to match voxel_coords, got {tuple(xyz.shape)}")
        feats = torch.cat([colors, xyz], dim=1)
    return SparseTensor(voxel_coords, feats, stride=1)
