"""spconv backend: the layer API of :mod:`.backend` run by spconv 2.x (imported only when
``spconv`` imports).

Parameters are those of the pure-PyTorch layers (``kernel (K**3, C_in, C_out)``, ``(C_in, C_out)``
for a 1x1x1 stride-1 kernel, ``bias (1, C_out)``, ``bn.*``), so one state dict loads into either
backend. Each call hands spconv its own weight layout, ``(C_out, k_x, k_y, k_z, C_in)`` (spconv
2.3's "KRSC", the only layout 2.3 uses), as a permuted view of ``kernel``: no spatial flip, since
both spconv and our kernel maps compute ``in = out + offset`` (cross-correlation). Gradients flow
back into ``kernel``. A 1x1x1 stride-1 conv is a plain matmul, as spconv itself does.

What is supported (what the U-Nets use): submanifold convs with odd kernels (padding
``dilation * (k // 2)``), strided convs with ``kernel_size == stride`` (padding 0), and the
inverse of such a strided conv (``SparseInverseConv3d``, reusing the strided conv's index pairs
through the indice key ``down_<t>_<2t>``).

Coordinates: spconv wants indices ``>= 0`` at each level's resolution and one ``spatial_shape``
per batch. ``to_native`` shifts coordinates by an ``origin`` (a multiple of :data:`ALIGN`, so
every strided level up to stride ``ALIGN`` groups voxels exactly as our kernel maps do) and takes
the smallest spatial shape that is a multiple of ``ALIGN`` (nothing is dropped). When the
input's cache has ``bounds`` (spconv's own ``spatial_shape``, see
:class:`~.tensor.CoordinateCache`), origin 0 and those bounds are used, so spconv drops edge
voxels exactly as the official model does; per-scene bounds that differ between scenes cannot
be given to spconv (one shape per batch) and raise ``ValueError``.

Known spconv 2.3.8 CPU defect: with more than one intra-op thread, SubMConv3d returns wrong rows
on some inputs, differently from run to run (a race; e.g. 5 to 329 of 30,000 rows on a 64x64x32
random grid, 2 threads; none in 24 single-thread runs). The CPU path therefore runs every
spconv call with ``torch.set_num_threads(1)`` and restores the count afterwards. A second one:
when ``batch_size * prod(spatial_shape)`` reaches 2**31 spconv switches to 64-bit hash keys, and
on CPU its submanifold results were then wrong (seen at 2 x 2048 x 2048 x 1024); the CPU path
refuses such inputs with ``ValueError`` (a 2 cm grid reaches it only beyond ~25 m rooms).
Third: spconv's CPU build has no backward pass (its backward asks for a CUDA stream), so on CPU
this backend runs only without autograd (``torch.no_grad()`` or frozen inputs and kernels) and
says so; gradients need CUDA (or the torch backend).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache

import torch

from uniseg3d_model.sparse import nn as snn
from uniseg3d_model.sparse.backend import Backend
from uniseg3d_model.sparse.tensor import SparseTensor, pack_coords

ALIGN = 64  # origin and spatial shape multiple: exact for tensor strides up to 64
INT32_MAX = 2**31 - 1


@dataclass
class SpconvTensor:
    """Native tensor of this backend.

    sp: ``spconv.pytorch.SparseConvTensor`` with indices ``[b, (x - ox) / s, (y - oy) / s,
    (z - oz) / s]`` int32; stride: our tensor stride ``s``; origin: ``(3,)`` int64 shift in
    stride-1 voxels.
    """

    sp: object
    stride: int
    origin: torch.Tensor

    @property
    def feats(self) -> torch.Tensor:
        return self.sp.features

    def replace(self, feats: torch.Tensor) -> SpconvTensor:
        """Same rows, new ``feats (N, C')``."""
        return SpconvTensor(self.sp.replace_feature(feats), self.stride, self.origin)

    def __add__(self, other: SpconvTensor) -> SpconvTensor:
        if not isinstance(other, SpconvTensor):
            return self.replace(self.feats + other)
        _check_same_rows(self, other, "+")
        return self.replace(self.feats + other.feats)


def _check_same_rows(a: SpconvTensor, b: SpconvTensor, what: str) -> None:
    ia, ib = a.sp.indices, b.sp.indices
    if a.stride != b.stride or (ia is not ib and (ia.shape != ib.shape or not torch.equal(ia, ib))):
        raise ValueError(f"{what}: spconv tensors must share coordinates (same stride, same rows)")


@contextmanager
def _cpu_single_thread(device: torch.device) -> Iterator[None]:
    """Pin one intra-op thread around a CPU spconv call (the multi-thread race above)."""
    n = torch.get_num_threads()
    if device.type != "cpu" or n == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def spconv_weight(kernel: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """Our ``kernel (K**3, C_in, C_out)`` (offset ``ix + K * (iy + K * iz)``) -> spconv's
    ``(C_out, K, K, K, C_in)`` indexed ``[o, ix, iy, iz, i]``."""
    k = kernel_size
    c_in, c_out = kernel.shape[-2], kernel.shape[-1]
    return kernel.reshape(k, k, k, c_in, c_out).permute(4, 2, 1, 0, 3).contiguous()


class _SpconvConv(snn._ConvBase):
    """Our conv parameters; the spconv module (kept outside the module tree, no parameters of
    its own) runs the op with the weight rebuilt from ``kernel`` on each call."""

    def _make_op(self, op) -> None:
        del op.weight  # the weight is passed in from ``kernel`` at each call
        self.__dict__["_op"] = op

    def _run(self, x: SpconvTensor, indice_key: str, out_stride: int) -> SpconvTensor:
        if not isinstance(x, SpconvTensor):
            raise ValueError(f"{type(self).__name__} expects a SpconvTensor, got {type(x).__name__}")
        if x.feats.shape[1] != self.in_channels:
            raise ValueError(
                f"{type(self).__name__}: input has {x.feats.shape[1]} channels, expected {self.in_channels}"
            )
        device = x.feats.device
        if (
            device.type == "cpu"
            and torch.is_grad_enabled()
            and (x.feats.requires_grad or self.kernel.requires_grad)
        ):
            raise ValueError(
                "spconv backend: spconv's CPU build has no backward pass (it asks for a CUDA stream); "
                "run under torch.no_grad(), train with backend='torch', or use CUDA"
            )
        op = self.__dict__["_op"]
        op.indice_key = indice_key
        op.weight = spconv_weight(self.kernel, self.kernel_size)
        with _cpu_single_thread(x.feats.device):
            out = op(x.sp)
        feats = out.features if self.bias is None else out.features + self.bias
        return SpconvTensor(out.replace_feature(feats), out_stride, x.origin)


class SpconvConv3d(_SpconvConv):
    """Conv3d of this backend (signature of :class:`.nn.SparseConv3d`)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        dilation: int = 1,
        bias: bool = False,
    ) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride, dilation, bias, transpose=False)
        import spconv.pytorch as spconv

        if stride == 1:
            if kernel_size % 2 == 0:
                raise ValueError(f"spconv backend: stride-1 convs need an odd kernel_size, got {kernel_size}")
            if kernel_size > 1:
                pad = dilation * (kernel_size // 2)
                self._make_op(
                    spconv.SubMConv3d(
                        in_channels, out_channels, kernel_size, padding=pad, dilation=dilation, bias=False
                    )
                )
        else:
            if kernel_size != stride or dilation != 1:
                raise ValueError(
                    "spconv backend: strided convs need kernel_size == stride and dilation 1, "
                    f"got kernel_size={kernel_size}, stride={stride}, dilation={dilation}"
                )
            self._make_op(
                spconv.SparseConv3d(in_channels, out_channels, kernel_size, stride=stride, bias=False)
            )

    def forward(self, x: SpconvTensor) -> SpconvTensor:
        if self.stride == 1 and self.kernel_size == 1:
            feats = x.feats @ self.kernel
            return x.replace(feats if self.bias is None else feats + self.bias)
        if self.stride == 1:
            key = f"subm_{x.stride}_{self.kernel_size}_{self.dilation}"
            return self._run(x, key, x.stride)
        if x.stride * self.stride > ALIGN:
            raise ValueError(f"spconv backend: tensor stride {x.stride * self.stride} exceeds {ALIGN}")
        return self._run(x, f"down_{x.stride}_{x.stride * self.stride}", x.stride * self.stride)


class SpconvConvTranspose3d(_SpconvConv):
    """ConvTranspose3d of this backend: spconv's ``SparseInverseConv3d`` onto the coordinates
    the matching strided conv started from."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 2,
        stride: int = 2,
        dilation: int = 1,
        bias: bool = False,
    ) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride, dilation, bias, transpose=True)
        if stride == 1 or kernel_size != stride or dilation != 1:
            raise ValueError(
                "spconv backend: transposed convs need kernel_size == stride > 1 and dilation 1, "
                f"got kernel_size={kernel_size}, stride={stride}, dilation={dilation}"
            )
        import spconv.pytorch as spconv

        self._make_op(
            spconv.SparseInverseConv3d(in_channels, out_channels, kernel_size, bias=False, indice_key="")
        )

    def forward(self, x: SpconvTensor) -> SpconvTensor:
        fine = x.stride // self.stride
        key = f"down_{fine}_{x.stride}"
        if x.stride % self.stride != 0 or key not in x.sp.indice_dict:
            raise ValueError(
                f"transposed conv: no strided conv {fine}->{x.stride} ran on this tensor's path; "
                "upsampling only returns to strides the network visited on the way down"
            )
        return self._run(x, key, fine)


class SpconvBatchNorm(snn.SparseBatchNorm):
    """BatchNorm of this backend (same ``bn.*`` parameters and statistics handling)."""

    def forward(self, x: SpconvTensor) -> SpconvTensor:
        return x.replace(self.normalize(x.feats))


def _relu(x: SpconvTensor) -> SpconvTensor:
    return x.replace(torch.relu(x.feats))


def _cat(*tensors: SpconvTensor) -> SpconvTensor:
    for t in tensors[1:]:
        _check_same_rows(tensors[0], t, "cat")
    return tensors[0].replace(torch.cat([t.feats for t in tensors], dim=1))


def _spatial_setup(x: SparseTensor) -> tuple[torch.Tensor, list[int]]:
    """``(origin (3,) int64, spatial_shape at x.stride)`` for :func:`to_native`."""
    bounds = x.cache.bounds
    if bounds is not None:
        if bounds.shape[0] > 1 and not bool((bounds == bounds[:1]).all()):
            raise ValueError(
                "spconv backend: spconv takes one spatial_shape per batch, but the scenes have different "
                f"bounds {bounds.tolist()}; use spatial_extent='batch' or 'none', or one scene per call"
            )
        origin = torch.zeros(3, dtype=torch.int64)
        return origin, [int(b) // x.stride for b in bounds[0].tolist()]
    c = x.coords[:, 1:].to(torch.int64).cpu()
    if c.numel() == 0:
        return torch.zeros(3, dtype=torch.int64), [ALIGN // x.stride] * 3
    origin = torch.div(c.min(0).values, ALIGN, rounding_mode="floor") * ALIGN
    extent = c.max(0).values - origin + 1
    shape = (torch.div(extent + ALIGN - 1, ALIGN, rounding_mode="floor") * ALIGN) // x.stride
    return origin, [int(s) for s in shape.tolist()]


def spconv_supports(device: torch.device | str) -> bool:
    """Whether the installed spconv runs on ``device`` (the PyPI package ``spconv`` is a CPU-only
    build; CUDA needs a ``spconv-cuXXX`` wheel matching the CUDA torch)."""
    if torch.device(device).type == "cpu":
        return True
    from spconv.cppconstants import CPU_ONLY_BUILD

    return not CPU_ONLY_BUILD


def to_native(x: SparseTensor) -> SpconvTensor:
    """Our tensor -> :class:`SpconvTensor` with the same rows in the same order."""
    import spconv.pytorch as spconv

    if not spconv_supports(x.feats.device):
        raise ValueError(
            f"spconv backend: the installed spconv is a CPU-only build and the input is on {x.feats.device}; "
            "install the CUDA wheel for your CUDA version (e.g. pip install spconv-cu120)"
        )
    if x.stride > ALIGN:
        raise ValueError(f"spconv backend: tensor stride {x.stride} exceeds {ALIGN}")
    origin, shape = _spatial_setup(x)
    volume = max(x.batch_size, 1) * shape[0] * shape[1] * shape[2]
    if x.feats.device.type == "cpu" and volume >= INT32_MAX:
        raise ValueError(
            f"spconv backend: batch_size * spatial_shape = {volume} >= 2**31 - 1, where spconv's CPU "
            "kernels give wrong results; crop the scene, use fewer scenes per batch or the torch backend"
        )
    c = x.coords.to(torch.int64)
    idx = torch.cat([c[:, :1], (c[:, 1:] - origin.to(c.device)) // x.stride], 1).to(torch.int32)
    sp = spconv.SparseConvTensor(x.feats, idx.contiguous(), shape, max(x.batch_size, 1))
    return SpconvTensor(sp, x.stride, origin)


def from_native(out: SpconvTensor, ref: SparseTensor) -> SparseTensor:
    """Native output at ``ref``'s stride -> our tensor with ``ref``'s rows in ``ref``'s order."""
    if out.stride != ref.stride:
        raise ValueError(f"output at stride {out.stride} does not match the input's stride {ref.stride}")
    idx = out.sp.indices.to(torch.int64)
    coords = torch.cat([idx[:, :1], idx[:, 1:] * out.stride + out.origin.to(idx.device)], 1)
    feats = out.feats
    ref_c = ref.coords.to(coords.device, torch.int64)
    if coords.shape != ref_c.shape or not torch.equal(coords, ref_c):
        keys = pack_coords(coords)
        sorted_keys, order = torch.sort(keys)
        q = pack_coords(ref_c)
        pos = torch.searchsorted(sorted_keys, q).clamp_(max=max(sorted_keys.numel() - 1, 0))
        if sorted_keys.numel() == 0 or not bool((sorted_keys[pos] == q).all()):
            raise ValueError("spconv output lacks some of the reference coordinates")
        feats = feats[order[pos]]
    return SparseTensor(ref.coords, feats, ref.stride, ref.cache)


@lru_cache(maxsize=1)
def spconv_backend() -> Backend:
    import spconv.pytorch  # noqa: F401  (fail here, with the caller's message, when it cannot load)

    return Backend(
        name="spconv",
        Conv3d=SpconvConv3d,
        ConvTranspose3d=SpconvConvTranspose3d,
        BatchNorm=SpconvBatchNorm,
        relu=_relu,
        cat=_cat,
        to_native=to_native,
        from_native=from_native,
    )
