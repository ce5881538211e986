"""Sparse tensor type, coordinate hashing and voxelization.

Coordinates follow MinkowskiEngine's convention: a tensor at stride ``s`` has integer
coordinates ``[batch, x, y, z]`` on the stride-1 voxel grid, and every spatial coordinate is a
multiple of ``s``. Strided layers therefore produce coordinates that are comparable across
levels, and a translation of the input by a multiple of the largest stride translates every
level exactly.

Coordinates are hashed by packing ``[batch, x, y, z]`` into one int64 key (15 bits of batch,
16 bits per spatial axis, offset by 2**15), so a coordinate lookup is a sort plus
``torch.searchsorted``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

COORD_BITS = 16
COORD_OFFSET = 1 << (COORD_BITS - 1)  # spatial coordinates must lie in [-32768, 32767]
COORD_MIN = -COORD_OFFSET
COORD_MAX = COORD_OFFSET - 1
BATCH_MAX = (1 << 15) - 1


def pack_coords(coords: torch.Tensor) -> torch.Tensor:
    """Hash ``coords (N, 4)`` integer ``[batch, x, y, z]`` into ``(N,)`` int64 keys.

    The packing is order preserving (lexicographic in batch, x, y, z), so sorted keys are
    sorted coordinates. Coordinates outside the packable range raise ``ValueError``.
    """
    c = coords.to(torch.int64)
    if c.numel():
        lo = int(c[:, 1:].min())
        hi = int(c[:, 1:].max())
        if lo < COORD_MIN or hi > COORD_MAX:
            raise ValueError(
                f"coords: spatial voxel coordinates must lie in [{COORD_MIN}, {COORD_MAX}], "
                f"got range [{lo}, {hi}] (use a larger voxel_size or crop the scene)"
            )
        b_lo, b_hi = int(c[:, 0].min()), int(c[:, 0].max())
        if b_lo < 0 or b_hi > BATCH_MAX:
            raise ValueError(f"coords: batch index must lie in [0, {BATCH_MAX}], got [{b_lo}, {b_hi}]")
    return _pack_unchecked(c)


def _pack_unchecked(c: torch.Tensor) -> torch.Tensor:
    """Pack int64 ``(N, 4)`` coordinates known to be in range."""
    return (
        (c[:, 0] << (3 * COORD_BITS))
        | ((c[:, 1] + COORD_OFFSET) << (2 * COORD_BITS))
        | ((c[:, 2] + COORD_OFFSET) << COORD_BITS)
        | (c[:, 3] + COORD_OFFSET)
    )


def unpack_keys(keys: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`pack_coords`: ``(N,)`` int64 keys -> ``(N, 4)`` int32 coordinates."""
    mask = (1 << COORD_BITS) - 1
    out = torch.stack(
        [
            keys >> (3 * COORD_BITS),
            ((keys >> (2 * COORD_BITS)) & mask) - COORD_OFFSET,
            ((keys >> COORD_BITS) & mask) - COORD_OFFSET,
            (keys & mask) - COORD_OFFSET,
        ],
        dim=1,
    )
    return out.to(torch.int32)


class CoordinateCache:
    """Per-batch coordinate manager shared by every tensor derived from one input.

    Holds, per stride, the coordinates and their sorted hash keys, and every kernel map
    built so far, so all layers of a network that work at the same stride reuse one map.
    ``maps`` is keyed by plain tuples chosen by the op that builds the map.

    ``bounds`` (optional, set before any strided map is built): ``(B, 3)`` or ``(1, 3)`` int64
    exclusive upper bounds of the stride-1 voxel indices per batch index, spconv's
    ``spatial_shape``. With bounds, a strided convolution whose kernel equals its stride keeps an
    output cell ``c`` at stride ``s`` only when it lies wholly inside, ``c + s <= bound``, and
    drops the inputs that would reach other cells: spconv's output-size rule
    ``floor((S - k) / s) + 1`` applied level after level. Coordinates must then be >= 0.
    """

    def __init__(self, bounds: torch.Tensor | None = None) -> None:
        self.coords: dict[int, torch.Tensor] = {}
        self.sorted_keys: dict[int, tuple[torch.Tensor, torch.Tensor | None]] = {}
        self.maps: dict[tuple, Any] = {}
        self.bounds: torch.Tensor | None = None
        if bounds is not None:
            b = torch.as_tensor(bounds, dtype=torch.int64).reshape(-1, 3)
            if b.numel() == 0 or bool((b < 1).any()):
                raise ValueError(f"bounds must be positive (B, 3) voxel extents, got {b.tolist()}")
            self.bounds = b

    def register(self, stride: int, coords: torch.Tensor) -> None:
        self.coords[stride] = coords

    def lookup_table(self, stride: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(sorted_keys (M,), order (M,) or None)`` of the coordinates at ``stride``: row
        ``order[i]`` has key ``sorted_keys[i]``; ``order`` is None when the rows are already
        sorted (the usual case after :func:`voxelize`), which saves every row gather."""
        if stride not in self.sorted_keys:
            keys = pack_coords(self.coords[stride])
            if keys.numel() > 1 and bool((keys[1:] > keys[:-1]).all()):
                sorted_keys, order = keys, None
            else:
                sorted_keys, order = torch.sort(keys)
                if sorted_keys.numel() > 1 and bool((sorted_keys[1:] == sorted_keys[:-1]).any()):
                    raise ValueError(f"coords: duplicate coordinates at stride {stride}; voxelize first")
            self.sorted_keys[stride] = (sorted_keys, order)
        return self.sorted_keys[stride]


class SparseTensor:
    """Sparse 3D feature map.

    coords: (N, 4) int32 ``[batch, x, y, z]`` voxel coordinates (multiples of ``stride``), unique.
    feats:  (N, C) float features, one row per coordinate.
    stride: tensor stride in voxels (1 at the input resolution).
    cache:  the :class:`CoordinateCache` shared with tensors derived from this one; a new one is
            made when omitted.
    """

    def __init__(
        self,
        coords: torch.Tensor,
        feats: torch.Tensor,
        stride: int = 1,
        cache: CoordinateCache | None = None,
    ) -> None:
        coords = torch.as_tensor(coords)
        feats = torch.as_tensor(feats)
        if coords.ndim != 2 or coords.shape[1] != 4:
            raise ValueError(f"coords must be (N, 4) [batch, x, y, z], got shape {tuple(coords.shape)}")
        if coords.dtype.is_floating_point or coords.dtype == torch.bool:
            raise ValueError(f"coords must be an integer tensor, got dtype {coords.dtype}")
        if feats.ndim != 2 or feats.shape[0] != coords.shape[0]:
            raise ValueError(
                f"feats must be (N, C) with N={coords.shape[0]} matching coords, got {tuple(feats.shape)}"
            )
        if not feats.dtype.is_floating_point:
            raise ValueError(f"feats must be floating point, got dtype {feats.dtype}")
        if int(stride) < 1:
            raise ValueError(f"stride must be a positive integer, got {stride}")
        known = cache is not None and cache.coords.get(int(stride)) is coords
        if not known and int(stride) > 1 and bool((coords[:, 1:] % int(stride) != 0).any()):
            raise ValueError(f"coords: spatial coordinates at stride {stride} must be multiples of {stride}")
        if coords.device != feats.device or coords.dtype != torch.int32:
            coords = coords.to(device=feats.device, dtype=torch.int32)
        self.coords = coords
        self.feats = feats
        self.stride = int(stride)
        self.cache = cache if cache is not None else CoordinateCache()
        if self.stride not in self.cache.coords:
            if self.cache.bounds is not None and self.coords.numel() and int(self.coords[:, 1:].min()) < 0:
                raise ValueError("coords: spatial coordinates must be >= 0 when the cache has bounds")
            self.cache.register(self.stride, self.coords)

    def replace_feats(self, feats: torch.Tensor) -> SparseTensor:
        """Same coordinates (and cache), new ``feats (N, C')``."""
        return SparseTensor(self.coords, feats, self.stride, self.cache)

    def __add__(self, other: SparseTensor | torch.Tensor | float) -> SparseTensor:
        """Feature-wise sum with a tensor on the same coordinates (residual connections) or a
        broadcastable dense tensor / scalar."""
        if isinstance(other, SparseTensor):
            if other.coords is not self.coords and (
                other.coords.shape != self.coords.shape or not torch.equal(other.coords, self.coords)
            ):
                raise ValueError("cannot add sparse tensors with different coordinates")
            return self.replace_feats(self.feats + other.feats)
        return self.replace_feats(self.feats + other)

    @property
    def device(self) -> torch.device:
        return self.feats.device

    @property
    def batch_size(self) -> int:
        return int(self.coords[:, 0].max()) + 1 if self.coords.numel() else 0

    def __len__(self) -> int:
        return self.coords.shape[0]

    def __repr__(self) -> str:
        return f"SparseTensor(N={len(self)}, C={self.feats.shape[1]}, stride={self.stride})"


def voxelize(points: Any, voxel_size: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Quantize points to a voxel grid.

    points:     (N, 3) float, metres (numpy array or torch tensor).
    voxel_size: voxel edge length, metres (> 0).
    Returns ``voxel_coords (M, 3) int32 = unique(floor(points / voxel_size))`` in lexicographic
    (x, y, z) order and ``point_to_voxel (N,) int64`` with
    ``voxel_coords[point_to_voxel[i]] == floor(points[i] / voxel_size)``. Tensors live on the
    input's device (CPU for numpy input).
    """
    pts = torch.as_tensor(np.asarray(points) if not isinstance(points, torch.Tensor) else points)
    if pts.ndim != 2 or pts.shape[1] != 3:
        raise ValueError(f"points must be (N, 3), got shape {tuple(pts.shape)}")
    if not (float(voxel_size) > 0.0 and np.isfinite(float(voxel_size))):
        raise ValueError(f"voxel_size must be a positive finite number, got {voxel_size}")
    pts = pts.to(torch.float64)
    if pts.shape[0] == 0:
        return torch.zeros((0, 3), dtype=torch.int32), torch.zeros((0,), dtype=torch.int64)
    if not bool(torch.isfinite(pts).all()):
        raise ValueError("points contain NaN or infinite values")
    grid = torch.floor(pts / float(voxel_size)).to(torch.int64)
    lo = grid.min(dim=0).values
    rel = grid - lo
    extent = rel.max(dim=0).values + 1
    if float(extent[0]) * float(extent[1]) * float(extent[2]) >= 2.0**62:
        raise ValueError(f"points span too many voxels at voxel_size={voxel_size}: extent {extent.tolist()}")
    keys = (rel[:, 0] * extent[1] + rel[:, 1]) * extent[2] + rel[:, 2]
    uniq, inverse = torch.unique(keys, sorted=True, return_inverse=True)
    z = uniq % extent[2]
    y = (uniq // extent[2]) % extent[1]
    x = uniq // (extent[2] * extent[1])
    voxel_coords = (torch.stack([x, y, z], dim=1) + lo).to(torch.int32)
    return voxel_coords, inverse.to(torch.int64)


def batch_coords(coords_list: list[torch.Tensor]) -> torch.Tensor:
    """Concatenate per-scene ``(M_b, 3)`` voxel coordinates into ``(sum M_b, 4)`` int32
    ``[batch, x, y, z]`` with the batch index prepended."""
    out = []
    for b, c in enumerate(coords_list):
        c = torch.as_tensor(c).to(torch.int32)
        if c.ndim != 2 or c.shape[1] != 3:
            raise ValueError(f"coords_list[{b}] must be (M, 3), got shape {tuple(c.shape)}")
        out.append(torch.cat([torch.full((c.shape[0], 1), b, dtype=torch.int32, device=c.device), c], 1))
    if not out:
        return torch.zeros((0, 4), dtype=torch.int32)
    return torch.cat(out, 0)
