"""Kernel maps: which input row meets which output row through which kernel offset.

A kernel map for one convolution is a list of ``(k, in_rows, out_rows)`` triples, one per
non-empty kernel offset ``k``: output row ``out_rows[j]`` receives ``W[k]`` applied to input
row ``in_rows[j]``. Maps are built by hashing coordinates (see :mod:`.tensor`): the input
keys are sorted once per stride and every offset is a single vectorized
``torch.searchsorted`` over the shifted query keys. Maps are cached in the tensors'
:class:`~.tensor.CoordinateCache`, so all layers at one stride share them.

Kernel offsets follow MinkowskiEngine's hyper-cube order: offset index
``k = ix + kx * (iy + ky * iz)`` (x fastest). Along an axis with odd kernel size ``K`` the offset
is ``(i - K // 2) * dilation * tensor_stride``; with even ``K`` it is ``i * dilation *
tensor_stride`` (``i`` in ``[0, K)``), as in ME. ``in = out + offset`` (cross-correlation, like
``torch.nn.functional.conv3d``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from uniseg3d_model.sparse.tensor import (
    COORD_BITS,
    COORD_MAX,
    COORD_MIN,
    CoordinateCache,
    pack_coords,
    unpack_keys,
)


@dataclass
class KernelMap:
    """pairs: ``(k, in_rows (n_k,) int64, out_rows (n_k,) int64)`` for each non-empty offset;
    ``in_rows is None`` marks the identity map (every row to itself, submanifold centre).
    n_in / n_out: number of input / output rows. volume: kernel volume (number of offsets)."""

    pairs: list[tuple[int, torch.Tensor | None, torch.Tensor | None]]
    n_in: int
    n_out: int
    volume: int

    def transposed(self) -> KernelMap:
        """The same map with inputs and outputs swapped (transposed convolution)."""
        pairs = [(k, o, i) for k, i, o in self.pairs]
        return KernelMap(pairs, self.n_out, self.n_in, self.volume)

    def num_pairs(self) -> int:
        return sum(self.n_in if i is None else int(i.numel()) for _, i, _ in self.pairs)


def kernel_offsets(kernel_size: int, dilation: int = 1, tensor_stride: int = 1) -> torch.Tensor:
    """``(K**3, 3)`` int64 offsets in voxels, MinkowskiEngine order (x fastest)."""
    if kernel_size < 1:
        raise ValueError(f"kernel_size must be >= 1, got {kernel_size}")
    i = torch.arange(kernel_size, dtype=torch.int64)
    step = dilation * tensor_stride
    axis = (i - kernel_size // 2) * step if kernel_size % 2 == 1 else i * step
    z, y, x = torch.meshgrid(axis, axis, axis, indexing="ij")
    return torch.stack([x.reshape(-1), y.reshape(-1), z.reshape(-1)], dim=1)


def _offset_deltas(offsets: torch.Tensor) -> list[int]:
    """Key increments of spatial offsets (the packing is linear while fields do not overflow)."""
    return [
        (int(dx) << (2 * COORD_BITS)) + (int(dy) << COORD_BITS) + int(dz) for dx, dy, dz in offsets.tolist()
    ]


def _check_reach(coords: torch.Tensor, reach: int, what: str) -> None:
    if coords.numel() == 0 or reach == 0:
        return
    lo = int(coords[:, 1:].min()) - reach
    hi = int(coords[:, 1:].max()) + reach
    if lo < COORD_MIN or hi > COORD_MAX:
        raise ValueError(
            f"{what}: coordinates +- kernel reach ({reach}) leave the hashable range "
            f"[{COORD_MIN}, {COORD_MAX}] (got [{lo}, {hi}]); crop the scene or use a larger voxel"
        )


def _rows(order: torch.Tensor | None, idx: torch.Tensor) -> torch.Tensor:
    """Rows of sorted positions ``idx`` (identity when the rows are already sorted)."""
    return idx if order is None else order[idx]


def _search(
    in_keys: torch.Tensor,
    in_order: torch.Tensor | None,
    queries: torch.Tensor,
    query_order: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Look ``queries`` (the keys at sorted positions ``0..Q-1`` of the query side, shifted)
    up among sorted ``in_keys``; return matching (in_rows, query_rows)."""
    if in_keys.numel() == 0 or queries.numel() == 0:
        empty = torch.zeros(0, dtype=torch.int64, device=queries.device)
        return empty, empty
    pos = torch.searchsorted(in_keys, queries)
    pos.clamp_(max=in_keys.numel() - 1)
    hit = (in_keys[pos] == queries).nonzero().squeeze(1)
    return _rows(in_order, pos[hit]), _rows(query_order, hit)


def submanifold_map(cache: CoordinateCache, stride: int, kernel_size: int, dilation: int = 1) -> KernelMap:
    """Map of a stride-1 ("submanifold") convolution at tensor stride ``stride``: outputs are the
    input coordinates.

    Odd kernels use the symmetry ``map(-d) = swap(map(d))`` (only half the offsets are looked
    up) and the centre offset is the identity. With dilation 1 the lookups go per (dx, dy)
    column: one ``searchsorted`` finds the lowest z of the column window, and the other z
    offsets are read by stepping along the sorted keys (coordinates at stride ``s`` are
    multiples of ``s``, so no key lies between z and z + s), i.e. 4 searches for a 3^3 kernel
    instead of 26.
    """
    key = ("subm", stride, kernel_size, dilation)
    if key in cache.maps:
        return cache.maps[key]
    coords = cache.coords[stride]
    n = coords.shape[0]
    offsets = kernel_offsets(kernel_size, dilation, stride)
    volume = offsets.shape[0]
    _check_reach(coords, int(offsets.abs().max()), f"submanifold conv at stride {stride}")
    sorted_keys, order = cache.lookup_table(stride)
    found: dict[int, tuple[torch.Tensor | None, torch.Tensor | None]] = {}
    if kernel_size % 2 == 1 and dilation == 1 and n > 0:
        _column_walk(sorted_keys, order, kernel_size, stride, found)
    else:
        deltas = _offset_deltas(offsets)
        odd = kernel_size % 2 == 1
        for k in range(volume):
            if k in found:
                continue
            if deltas[k] == 0:
                found[k] = (None, None)
                continue
            in_rows, out_rows = _search(sorted_keys, order, sorted_keys + deltas[k], order)
            found[k] = (in_rows, out_rows)
            if odd:  # mirror offset: swap the roles of input and output rows
                found[volume - 1 - k] = (out_rows, in_rows)
    pairs = [(k, i, o) for k, (i, o) in sorted(found.items()) if i is None or i.numel() > 0]
    kmap = KernelMap(pairs, n, n, volume)
    cache.maps[key] = kmap
    return kmap


def _column_walk(
    keys: torch.Tensor,
    order: torch.Tensor | None,
    kernel_size: int,
    stride: int,
    found: dict[int, tuple[torch.Tensor | None, torch.Tensor | None]],
) -> None:
    """Fill ``found`` for an odd, undilated kernel (see :func:`submanifold_map`)."""
    r = kernel_size // 2
    volume = kernel_size**3
    last = keys.numel() - 1
    for dy in range(0, r + 1):
        for dx in range(-r, r + 1):
            if dy == 0 and dx < 0:
                continue  # mirror of (-dx, 0)
            base = keys + ((dx * stride) << (2 * COORD_BITS)) + ((dy * stride) << COORD_BITS) - r * stride
            pos = torch.searchsorted(keys, base)
            for j in range(kernel_size):
                k = (dx + r) + kernel_size * ((dy + r) + kernel_size * j)
                p = pos.clamp(max=last)
                hit = keys[p] == (base + j * stride)
                if k not in found:
                    if k == (volume - 1) // 2:
                        found[k] = (None, None)
                    else:
                        idx = hit.nonzero().squeeze(1)
                        in_rows, out_rows = _rows(order, p[idx]), _rows(order, idx)
                        found[k] = (in_rows, out_rows)
                        found[volume - 1 - k] = (out_rows, in_rows)
                if j < kernel_size - 1:
                    pos = pos + hit


def strided_coords(
    coords: torch.Tensor, out_stride: int, bounds: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(M, 4)`` unique coordinates ``floor(c / out_stride) * out_stride`` (batch kept) and the
    ``(N,)`` int64 index of each input row's output row.

    bounds: optional ``(B, 3)`` / ``(1, 3)`` exclusive stride-1 extents (see
    :class:`~.tensor.CoordinateCache`): output cells not wholly inside (``c + out_stride >
    bound``) are dropped and their input rows get index -1.
    """
    c = coords.to(torch.int64)
    down = torch.cat([c[:, :1], torch.div(c[:, 1:], out_stride, rounding_mode="floor") * out_stride], 1)
    if bounds is None:
        uniq, inverse = torch.unique(pack_coords(down), sorted=True, return_inverse=True)
        return unpack_keys(uniq), inverse
    b = bounds.to(c.device)
    limit = b[c[:, 0]] if b.shape[0] > 1 else b
    if b.shape[0] > 1 and c.numel() and int(c[:, 0].max()) >= b.shape[0]:
        raise ValueError(f"bounds: {b.shape[0]} rows but batch index {int(c[:, 0].max())} present")
    keep = ((down[:, 1:] + out_stride) <= limit).all(dim=1)
    uniq, inv_kept = torch.unique(pack_coords(down[keep]), sorted=True, return_inverse=True)
    inverse = torch.full((c.shape[0],), -1, dtype=torch.int64, device=c.device)
    inverse[keep] = inv_kept
    return unpack_keys(uniq), inverse


def downsample_map(
    cache: CoordinateCache, in_stride: int, stride: int, kernel_size: int, dilation: int = 1
) -> KernelMap:
    """Map of a strided convolution from tensor stride ``in_stride`` to ``in_stride * stride``.

    Output coordinates are the strided input coordinates (ME's rule), registered in the cache at
    the output stride (or reused if already there). When ``kernel_size == stride`` (and no
    dilation) every input falls into exactly one output cell, so the map is computed directly
    from the coordinates without any search.
    """
    out_stride = in_stride * stride
    key = ("down", in_stride, out_stride, kernel_size, dilation)
    if key in cache.maps:
        return cache.maps[key]
    in_coords = cache.coords[in_stride]
    if cache.bounds is not None and (kernel_size != stride or dilation != 1):
        raise ValueError(
            f"strided conv with bounds: only kernel_size == stride, dilation 1 is supported "
            f"(got kernel_size={kernel_size}, stride={stride}, dilation={dilation})"
        )
    if out_stride not in cache.coords:
        out_coords, inverse = strided_coords(in_coords, out_stride, cache.bounds)
        cache.register(out_stride, out_coords)
        cache.maps[("inverse", in_stride, out_stride)] = inverse
    out_coords = cache.coords[out_stride]
    n_in, n_out = in_coords.shape[0], out_coords.shape[0]
    volume = kernel_size**3
    inverse = cache.maps.get(("inverse", in_stride, out_stride))
    if kernel_size == stride and dilation == 1 and inverse is not None:
        # local index of each input inside its output cell, in ME's x-fastest order
        local = torch.div(in_coords[:, 1:].to(torch.int64) % out_stride, in_stride, rounding_mode="floor")
        kidx = local[:, 0] + kernel_size * (local[:, 1] + kernel_size * local[:, 2])
        kidx[inverse < 0] = volume  # rows outside the bounds: an extra bin, never paired
        sort_k, perm = torch.sort(kidx, stable=True)
        counts = torch.bincount(sort_k, minlength=volume).tolist()
        pairs = []
        start = 0
        for k, cnt in enumerate(counts[:volume]):
            if cnt:
                rows = perm[start : start + cnt]
                pairs.append((k, rows, inverse[rows]))
            start += cnt
    else:
        offsets = kernel_offsets(kernel_size, dilation, in_stride)
        _check_reach(out_coords, int(offsets.abs().max()), f"strided conv {in_stride}->{out_stride}")
        in_keys, in_order = cache.lookup_table(in_stride)
        out_keys, out_order = cache.lookup_table(out_stride)
        pairs = []
        for k, delta in enumerate(_offset_deltas(offsets)):
            in_rows, out_rows = _search(in_keys, in_order, out_keys + delta, out_order)
            if in_rows.numel():
                pairs.append((k, in_rows, out_rows))
    kmap = KernelMap(pairs, n_in, n_out, volume)
    cache.maps[key] = kmap
    return kmap


def upsample_map(
    cache: CoordinateCache, in_stride: int, stride: int, kernel_size: int, dilation: int = 1
) -> KernelMap:
    """Map of a transposed convolution from ``in_stride`` to ``in_stride // stride``: the
    transpose of the strided convolution's map, onto the coordinates cached at the finer stride
    (the encoder's), so decoder features land on exactly the encoder's rows."""
    if in_stride % stride != 0:
        raise ValueError(f"transposed conv: tensor stride {in_stride} is not divisible by stride {stride}")
    out_stride = in_stride // stride
    if out_stride not in cache.coords:
        raise ValueError(
            f"transposed conv: no coordinates at stride {out_stride} in this tensor's cache; "
            "upsampling only returns to strides the network visited on the way down"
        )
    return downsample_map(cache, out_stride, stride, kernel_size, dilation).transposed()
