"""MinkowskiEngine backend (imported only when ``MinkowskiEngine`` imports).

Status: written against the ME 0.5.4 API but not executed here (ME could not be built within the
time box on the 2-core CPU machine); tests/test_backbone.py compares both backends on shared
weights automatically wherever ME imports.

The layers are ME's own classes, which create exactly the parameters of :mod:`.nn`
(``kernel (K, C_in, C_out)`` or ``(C_in, C_out)`` for 1x1x1 stride 1, ``bias (1, C_out)``,
``bn.*``); only construction is wrapped so both backends share one signature.
"""

from __future__ import annotations

from functools import lru_cache

import torch

from uniseg3d_model.sparse.backend import Backend
from uniseg3d_model.sparse.tensor import SparseTensor


@lru_cache(maxsize=1)
def minkowski_backend() -> Backend:
    import MinkowskiEngine as ME
    import MinkowskiEngine.MinkowskiFunctional as MEF

    def conv3d(in_channels, out_channels, kernel_size=3, stride=1, dilation=1, bias=False):
        return ME.MinkowskiConvolution(
            in_channels,
            out_channels,
            kernel_size=kernel_size,
            stride=stride,
            dilation=dilation,
            bias=bias,
            dimension=3,
        )

    def conv_transpose3d(in_channels, out_channels, kernel_size=2, stride=2, dilation=1, bias=False):
        return ME.MinkowskiConvolutionTranspose(
            in_channels,
            out_channels,
            kernel_size=kernel_size,
            stride=stride,
            dilation=dilation,
            bias=bias,
            dimension=3,
        )

    def batch_norm(num_features, eps=1e-5, momentum=0.1):
        return ME.MinkowskiBatchNorm(num_features, eps=eps, momentum=momentum)

    def to_native(x: SparseTensor):
        return ME.SparseTensor(
            features=x.feats,
            coordinates=x.coords.to(torch.int32),
            tensor_stride=x.stride,
            device=x.feats.device,
        )

    def from_native(out, ref: SparseTensor) -> SparseTensor:
        stride = int(out.tensor_stride[0])
        if stride != ref.stride:
            raise ValueError(f"output at stride {stride} does not match the input's stride {ref.stride}")
        # rows of an ME tensor built from unique coordinates follow ME's map order; look each
        # reference coordinate up explicitly so the result is in the reference's row order
        key_rows = _row_lookup(out.C, ref.coords)
        return SparseTensor(ref.coords, out.F[key_rows], ref.stride, ref.cache)

    return Backend(
        name="minkowski",
        Conv3d=conv3d,
        ConvTranspose3d=conv_transpose3d,
        BatchNorm=batch_norm,
        relu=MEF.relu,
        cat=ME.cat,
        to_native=to_native,
        from_native=from_native,
    )


def _row_lookup(table_coords: torch.Tensor, query_coords: torch.Tensor) -> torch.Tensor:
    """Row of ``table_coords`` holding each of ``query_coords`` (both ``(N, 4)``, same set)."""
    from uniseg3d_model.sparse.tensor import pack_coords

    keys = pack_coords(table_coords.to(query_coords.device))
    sorted_keys, order = torch.sort(keys)
    q = pack_coords(query_coords)
    pos = torch.searchsorted(sorted_keys, q).clamp_(max=max(sorted_keys.numel() - 1, 0))
    if not bool((sorted_keys[pos] == q).all()):
        raise ValueError("MinkowskiEngine output lacks some input coordinates")
    return order[pos]
