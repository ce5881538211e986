"""Sparse layers of the pure-PyTorch backend.

Parameter names and shapes equal MinkowskiEngine's so a state dict moves between backends:
convolutions hold ``kernel`` ``(kernel_volume, C_in, C_out)`` (``(C_in, C_out)`` for a 1x1x1
kernel with stride 1) and ``bias`` ``(1, C_out)``; batch norm wraps ``bn`` (``nn.BatchNorm1d``).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from uniseg3d_model.sparse import functional as F
from uniseg3d_model.sparse.kernel_map import downsample_map, submanifold_map, upsample_map
from uniseg3d_model.sparse.tensor import SparseTensor


def kernel_shape(in_channels: int, out_channels: int, kernel_size: int, stride: int) -> tuple[int, ...]:
    """MinkowskiEngine's kernel parameter shape for a 3D convolution."""
    volume = kernel_size**3
    if volume == 1 and stride == 1:
        return (in_channels, out_channels)
    return (volume, in_channels, out_channels)


def _check_positive(**values: int) -> None:
    for name, v in values.items():
        if int(v) < 1:
            raise ValueError(f"{name} must be a positive integer, got {v}")


class _ConvBase(nn.Module):
    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int,
        dilation: int,
        bias: bool,
        transpose: bool,
    ) -> None:
        super().__init__()
        _check_positive(
            in_channels=in_channels,
            out_channels=out_channels,
            kernel_size=kernel_size,
            stride=stride,
            dilation=dilation,
        )
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = kernel_size
        self.stride = stride
        self.dilation = dilation
        self.kernel = nn.Parameter(torch.empty(kernel_shape(in_channels, out_channels, kernel_size, stride)))
        self.bias = nn.Parameter(torch.empty(1, out_channels)) if bias else None
        fan = (out_channels if transpose else in_channels) * kernel_size**3
        bound = 1.0 / math.sqrt(fan)
        nn.init.uniform_(self.kernel, -bound, bound)
        if self.bias is not None:
            nn.init.uniform_(self.bias, -bound, bound)

    def _check_input(self, x: SparseTensor) -> None:
        if not isinstance(x, SparseTensor):
            raise ValueError(f"{type(self).__name__} expects a SparseTensor, got {type(x).__name__}")
        if x.feats.shape[1] != self.in_channels:
            raise ValueError(
                f"{type(self).__name__}: input has {x.feats.shape[1]} channels, expected {self.in_channels}"
            )

    def _finish(
        self, feats: torch.Tensor, coords: torch.Tensor, stride: int, x: SparseTensor
    ) -> SparseTensor:
        if self.bias is not None:
            feats = feats + self.bias
        return SparseTensor(coords, feats, stride, x.cache)

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}, dilation={self.dilation}, bias={self.bias is not None}"
        )


class SparseConv3d(_ConvBase):
    """3D sparse convolution (MinkowskiConvolution semantics).

    stride 1: submanifold (outputs on the input coordinates); stride s > 1: outputs on
    ``floor(c / (s * tensor_stride)) * s * tensor_stride``, tensor stride multiplied by s.
    Input/Output: :class:`SparseTensor` with ``(N, in_channels)`` -> ``(M, out_channels)``.
    """

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

    def forward(self, x: SparseTensor) -> SparseTensor:
        self._check_input(x)
        if self.stride == 1:
            if self.kernel.ndim == 2:
                return self._finish(x.feats @ self.kernel, x.coords, x.stride, x)
            kmap = submanifold_map(x.cache, x.stride, self.kernel_size, self.dilation)
            return self._finish(F.sparse_conv(x.feats, self.kernel, kmap), x.coords, x.stride, x)
        kmap = downsample_map(x.cache, x.stride, self.stride, self.kernel_size, self.dilation)
        out_stride = x.stride * self.stride
        feats = F.sparse_conv(x.feats, self.kernel, kmap)
        return self._finish(feats, x.cache.coords[out_stride], out_stride, x)


class SparseConvTranspose3d(_ConvBase):
    """Transposed sparse convolution (MinkowskiConvolutionTranspose, no new coordinates): from
    tensor stride ``t`` back to ``t // stride`` onto the coordinates the encoder had there."""

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

    def forward(self, x: SparseTensor) -> SparseTensor:
        self._check_input(x)
        if self.stride == 1:
            kmap = submanifold_map(x.cache, x.stride, self.kernel_size, self.dilation).transposed()
            out_stride = x.stride
        else:
            kmap = upsample_map(x.cache, x.stride, self.stride, self.kernel_size, self.dilation)
            out_stride = x.stride // self.stride
        kernel = self.kernel if self.kernel.ndim == 3 else self.kernel.unsqueeze(0)
        feats = F.sparse_conv(x.feats, kernel, kmap)
        return self._finish(feats, x.cache.coords[out_stride], out_stride, x)


class SparseBatchNorm(nn.Module):
    """Batch norm over the rows of a sparse tensor; parameters under ``bn`` as in ME."""

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1) -> None:
        super().__init__()
        self.bn = nn.BatchNorm1d(num_features, eps=eps, momentum=momentum)

    def normalize(self, feats: torch.Tensor) -> torch.Tensor:
        """``feats (N, C) -> (N, C)`` normalized rows (shared with the spconv backend)."""
        bn = self.bn
        has_stats = bn.track_running_stats and bn.running_mean is not None
        # a training batch with a single row (e.g. the coarsest level of a tiny scene) has no
        # batch statistics; normalize it with the running statistics instead of failing
        if (bn.training and feats.shape[0] > 1) or not has_stats:
            return bn(feats)
        # inference: one fused multiply-add (BatchNorm1d's (N, C) CPU kernel is several times slower)
        scale = torch.rsqrt(bn.running_var + bn.eps)
        if bn.weight is not None:
            scale = scale * bn.weight
        shift = -bn.running_mean * scale
        if bn.bias is not None:
            shift = shift + bn.bias
        return torch.addcmul(shift.to(feats.dtype), feats, scale.to(feats.dtype))

    def forward(self, x: SparseTensor) -> SparseTensor:
        return x.replace_feats(self.normalize(x.feats))


class SparseReLU(nn.Module):
    def forward(self, x: SparseTensor) -> SparseTensor:
        return F.relu(x)


class SparsePool(nn.Module):
    """Strided sparse average or max pooling (``kernel_size == stride`` is the usual case)."""

    def __init__(self, kernel_size: int = 2, stride: int = 2, mode: str = "avg") -> None:
        super().__init__()
        _check_positive(kernel_size=kernel_size, stride=stride)
        if stride < 2:
            raise ValueError(f"stride must be >= 2 for pooling, got {stride}")
        if mode not in ("avg", "max"):
            raise ValueError(f"mode must be 'avg' or 'max', got {mode!r}")
        self.kernel_size, self.stride, self.mode = kernel_size, stride, mode

    def forward(self, x: SparseTensor) -> SparseTensor:
        kmap = downsample_map(x.cache, x.stride, self.stride, self.kernel_size)
        return F.pool(x, kmap, x.stride * self.stride, self.mode)


class GlobalPool(nn.Module):
    """``(B, C)`` per-batch mean or max of all rows."""

    def __init__(self, mode: str = "avg") -> None:
        super().__init__()
        if mode not in ("avg", "max"):
            raise ValueError(f"mode must be 'avg' or 'max', got {mode!r}")
        self.mode = mode

    def forward(self, x: SparseTensor) -> torch.Tensor:
        return F.global_pool(x, self.mode)
