"""Sparse 3D convolution: tensor type, voxelization, and layers with two backends
(pure PyTorch gather-GEMM-scatter, and MinkowskiEngine when it imports) sharing one
parameter layout."""

from uniseg3d_model.sparse.backend import Backend, get_backend, minkowski_available
from uniseg3d_model.sparse.nn import (
    GlobalPool,
    SparseBatchNorm,
    SparseConv3d,
    SparseConvTranspose3d,
    SparsePool,
    SparseReLU,
)
from uniseg3d_model.sparse.tensor import (
    CoordinateCache,
    SparseTensor,
    batch_coords,
    pack_coords,
    unpack_keys,
    voxelize,
)

__all__ = [
    "Backend",
    "CoordinateCache",
    "GlobalPool",
    "SparseBatchNorm",
    "SparseConv3d",
    "SparseConvTranspose3d",
    "SparsePool",
    "SparseReLU",
    "SparseTensor",
    "batch_coords",
    "get_backend",
    "minkowski_available",
    "pack_coords",
    "unpack_keys",
    "voxelize",
]
