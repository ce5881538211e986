"""Sparse 3D convolution: tensor type, voxelization, and layers with two backends
(pure PyTorch gather-GEMM-scatter, and MinkowskiEngine when it imports) sharing one
parameter layout."""

from uniseg3d_model.sparse.tensor import (
    CoordinateCache,
    SparseTensor,
    batch_coords,
    pack_coords,
    unpack_keys,
    voxelize,
)

__all__ = [
    "CoordinateCache",
    "SparseTensor",
    "batch_coords",
    "pack_coords",
    "unpack_keys",
    "voxelize",
]
