"""Sparse 3D convolution: tensor type, voxelization, and layers with three backends
(pure PyTorch gather-GEMM-scatter; spconv 2.x and MinkowskiEngine when they import) sharing one
parameter layout."""

from uniseg3d_model.sparse.backend import Backend, get_backend, minkowski_available, spconv_available
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
    "spconv_available",
    "unpack_keys",
    "voxelize",
]
