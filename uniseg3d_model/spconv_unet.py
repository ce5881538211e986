"""The official UniSeg3D backbone: SPFormer's spconv U-Net, built from our sparse layers.

Structure (official ``uniseg3d/spconv_unet.py`` and ``uniseg3d.py``, ScanNet config: planes
32, 64, 96, 128, 160, ``block_reps`` 2, BN eps 1e-4, momentum 0.1), tensor stride in brackets:

    input_conv: 3x3x3 submanifold conv in_channels -> p0, no bias                 [1]
    unet = level(p0..pL):
        blocks: block_reps x ResidualBlock(p0 -> p0)                            [s]
        if more planes:
            down_norm -> ReLU -> down (2x2x2 stride-2 conv p0 -> p1, no bias)     [2s]
            inner = level(p1..pL)                                               [2s]
            up_norm -> ReLU -> up (2x2x2 inverse conv p1 -> p0 onto the level's rows) [s]
            cat(blocks output, up output) -> 2 p0 channels (skip first)
            tail: ResidualBlock(2 p0 -> p0), then (block_reps - 1) x ResidualBlock(p0 -> p0)
    output_norm -> ReLU                                                        [1]
    ResidualBlock(c_in -> c): norm1 -> ReLU -> conv1 (3x3x3 c_in -> c) -> norm2 -> ReLU
        -> conv2 (3x3x3 c -> c), plus x (c_in == c) or skip(x) (1x1x1 c_in -> c); no final ReLU.

Every conv has no bias; every BN is ``BatchNorm1d(eps, momentum)`` over the rows.

Spatial extent (what spconv does at the edges): spconv holds a ``spatial_shape`` ``S`` per batch
(official: ``clip(max voxel index + 1, 128)`` per axis over the whole batch, coordinates anchored
at each scene's minimum), and a stride-2 conv keeps only ``floor(S / 2)`` output cells per axis,
so when ``S`` is odd the last voxel slice is dropped from the coarser level (it gets no decoder
contribution on the way up). ``spatial_extent`` reproduces that: ``"scene"`` (default) applies the
official rule per scene (equal to the official forward for one scene, the official evaluation's
batch size, and exact under batching), ``"batch"`` applies it over the whole batch as the official
batched forward does (a scene's result then depends on the other scenes), ``"none"`` drops nothing
(coordinates may then be negative).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from uniseg3d_model.sparse import SparseTensor
from uniseg3d_model.sparse.backend import BACKEND_NAMES, Backend, get_backend
from uniseg3d_model.sparse.tensor import CoordinateCache

SPATIAL_EXTENTS = ("scene", "batch", "none")


@dataclass
class SpconvUNetConfig:
    """in_channels: input feature width (official: 6 = RGB in [-1, 1] + xyz minus the scene mean).
    planes: widths of the U-Net levels, finest first (official ``num_planes`` 32..160; CPU-sized
    presets change only this). block_reps: residual blocks per level and side (official 2; 1 or
    2, the official tail widths ``p0 * (2 - i)`` allow no more). bn_eps / bn_momentum: every BN
    (official 1e-4 / 0.1). spatial_extent: see the module docstring; min_spatial_shape: the
    official lower clip of the spatial shape (128). backend: 'torch' (default, runs everywhere)
    | 'spconv' | 'auto' | 'minkowski' (the last two only with spatial_extent='none').
    """

    in_channels: int = 6
    planes: tuple[int, ...] = (32, 64, 96, 128, 160)
    block_reps: int = 2
    bn_eps: float = 1e-4
    bn_momentum: float = 0.1
    spatial_extent: str = "scene"
    min_spatial_shape: int = 128
    backend: str = "torch"

    def __post_init__(self) -> None:
        self.planes = tuple(int(p) for p in self.planes)
        if not self.planes or min(self.planes) < 1:
            raise ValueError(f"planes must be one or more positive widths, got {self.planes}")
        if int(self.in_channels) < 1:
            raise ValueError(f"in_channels must be a positive integer, got {self.in_channels}")
        if int(self.block_reps) not in (1, 2):
            raise ValueError(
                f"block_reps must be 1 or 2 (official tail widths p0 * (2 - i)), got {self.block_reps}"
            )
        if not float(self.bn_eps) > 0.0:
            raise ValueError(f"bn_eps must be positive, got {self.bn_eps}")
        if not 0.0 < float(self.bn_momentum) <= 1.0:
            raise ValueError(f"bn_momentum must be in (0, 1], got {self.bn_momentum}")
        if self.spatial_extent not in SPATIAL_EXTENTS:
            raise ValueError(f"spatial_extent must be one of {SPATIAL_EXTENTS}, got {self.spatial_extent!r}")
        if int(self.min_spatial_shape) < 1:
            raise ValueError(f"min_spatial_shape must be a positive integer, got {self.min_spatial_shape}")
        if self.backend not in BACKEND_NAMES:
            raise ValueError(f"backend must be one of {BACKEND_NAMES}, got {self.backend!r}")

    @property
    def feature_dim(self) -> int:
        """Width of the output features (``planes[0]``)."""
        return self.planes[0]

    @classmethod
    def official(cls, **overrides) -> SpconvUNetConfig:
        """The released ScanNet model's backbone (the defaults)."""
        return cls(**overrides)

    @classmethod
    def small(cls, **overrides) -> SpconvUNetConfig:
        """Same topology, CPU-sized widths (tests, quick runs)."""
        kw: dict = dict(planes=(16, 24, 32))
        kw.update(overrides)
        return cls(**kw)


class ResidualBlock(nn.Module):
    """Pre-norm residual block (official ``ResidualBlock``, ``normalize_before=True``)."""

    def __init__(self, backend: Backend, c_in: int, c_out: int, eps: float, momentum: float) -> None:
        super().__init__()
        self._backend = backend
        self.norm1 = backend.BatchNorm(c_in, eps=eps, momentum=momentum)
        self.conv1 = backend.Conv3d(c_in, c_out, kernel_size=3)
        self.norm2 = backend.BatchNorm(c_out, eps=eps, momentum=momentum)
        self.conv2 = backend.Conv3d(c_out, c_out, kernel_size=3)
        self.skip = backend.Conv3d(c_in, c_out, kernel_size=1) if c_in != c_out else None

    def forward(self, x):
        relu = self._backend.relu
        out = self.conv2(relu(self.norm2(self.conv1(relu(self.norm1(x))))))
        return out + (x if self.skip is None else self.skip(x))


class UNetLevel(nn.Module):
    """One level of the recursive U-Net (official ``SpConvUNet`` with one fewer plane inside)."""

    def __init__(
        self, backend: Backend, planes: tuple[int, ...], block_reps: int, eps: float, momentum: float
    ):
        super().__init__()
        self._backend = backend
        p0 = planes[0]
        self.blocks = nn.ModuleList(
            [ResidualBlock(backend, p0, p0, eps, momentum) for _ in range(block_reps)]
        )
        self.inner = None
        if len(planes) > 1:
            p1 = planes[1]
            self.down_norm = backend.BatchNorm(p0, eps=eps, momentum=momentum)
            self.down = backend.Conv3d(p0, p1, kernel_size=2, stride=2)
            self.inner = UNetLevel(backend, planes[1:], block_reps, eps, momentum)
            self.up_norm = backend.BatchNorm(p1, eps=eps, momentum=momentum)
            self.up = backend.ConvTranspose3d(p1, p0, kernel_size=2, stride=2)
            self.tail = nn.ModuleList(
                [ResidualBlock(backend, p0 * (2 - i), p0, eps, momentum) for i in range(block_reps)]
            )

    def forward(self, x):
        for block in self.blocks:
            x = block(x)
        if self.inner is None:
            return x
        relu = self._backend.relu
        y = self.inner(self.down(relu(self.down_norm(x))))
        y = self.up(relu(self.up_norm(y)))
        x = self._backend.cat(x, y)
        for block in self.tail:
            x = block(x)
        return x


def official_spatial_bounds(
    coords: torch.Tensor, min_spatial_shape: int = 128, per_scene: bool = True
) -> torch.Tensor:
    """spconv spatial shapes as the official collate computes them.

    coords: (N, 4) int ``[batch, x, y, z]``, spatial coordinates >= 0 (anchored at each scene's
    minimum). Returns int64 ``(B, 3)`` ``clip(max + 1, min_spatial_shape)`` per scene
    (``per_scene``) or ``(1, 3)`` over the whole batch (the official batched forward).
    """
    c = coords.to(torch.int64)
    if c.numel() and int(c[:, 1:].min()) < 0:
        raise ValueError(
            "coords: spconv spatial extents need coordinates >= 0 (anchor each scene at its minimum "
            "as the official collate does, or use spatial_extent='none')"
        )
    rows = int(c[:, 0].max()) + 1 if (per_scene and c.numel()) else 1
    batch = c[:, 0] if per_scene else torch.zeros_like(c[:, 0])
    top = torch.zeros((rows, 3), dtype=torch.int64, device=c.device)
    top = top.scatter_reduce(0, batch.unsqueeze(1).expand(-1, 3), c[:, 1:] + 1, reduce="amax")
    return top.clamp(min=int(min_spatial_shape)).cpu()


class SpconvUNet(nn.Module):
    """``SpconvUNet(cfg)(x) -> SparseTensor``.

    x: :class:`SparseTensor` at stride 1, coords ``(N, 4)`` ``[batch, x, y, z]`` voxel indices,
    feats ``(N, cfg.in_channels)``. Returns ``(N, cfg.feature_dim)`` features on ``x``'s
    coordinates in ``x``'s row order (invariant to row order; exact under batching unless
    ``spatial_extent='batch'``).
    """

    def __init__(self, cfg: SpconvUNetConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.backend = get_backend(cfg.backend)
        if self.backend.name == "minkowski" and cfg.spatial_extent != "none":
            raise ValueError(
                "backend 'minkowski' cannot apply spconv spatial extents; use spatial_extent='none'"
            )
        b, eps, m = self.backend, cfg.bn_eps, cfg.bn_momentum
        self.input_conv = b.Conv3d(cfg.in_channels, cfg.planes[0], kernel_size=3)
        self.unet = UNetLevel(b, cfg.planes, cfg.block_reps, eps, m)
        self.output_norm = b.BatchNorm(cfg.planes[0], eps=eps, momentum=m)

    @property
    def feature_dim(self) -> int:
        return self.cfg.feature_dim

    def forward(self, x: SparseTensor) -> SparseTensor:
        if not isinstance(x, SparseTensor):
            raise ValueError(f"SpconvUNet expects a SparseTensor, got {type(x).__name__}")
        if x.stride != 1:
            raise ValueError(f"SpconvUNet input must be at tensor stride 1, got {x.stride}")
        if x.feats.shape[1] != self.cfg.in_channels:
            raise ValueError(
                f"SpconvUNet: input has {x.feats.shape[1]} channels, cfg.in_channels={self.cfg.in_channels}"
            )
        h = x
        if self.cfg.spatial_extent != "none":
            bounds = official_spatial_bounds(
                x.coords, self.cfg.min_spatial_shape, per_scene=self.cfg.spatial_extent == "scene"
            )
            h = SparseTensor(x.coords, x.feats, 1, CoordinateCache(bounds))
        relu = self.backend.relu
        out = relu(self.output_norm(self.unet(self.input_conv(self.backend.to_native(h)))))
        out = self.backend.from_native(out, h)
        return SparseTensor(x.coords, out.feats, 1, x.cache)
