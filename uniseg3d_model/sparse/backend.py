"""Backend selection: the same layer API over the pure-PyTorch implementation, spconv 2.x or
MinkowskiEngine.

A :class:`Backend` bundles the layer classes and the few functions a network needs
(``relu``, ``cat``) plus the conversions between our :class:`~.tensor.SparseTensor` and the
backend's native tensor. Layer constructors have identical signatures and create identical
parameter names and shapes in every backend, so a state dict saved from one loads into the others.

Names: ``"torch"`` (pure PyTorch, CPU and CUDA, the default everywhere), ``"spconv"`` (spconv 2.x,
the official UniSeg3D backbone's library; selected only by name), ``"minkowski"``
(MinkowskiEngine), ``"auto"`` (MinkowskiEngine when it imports, else torch; never spconv).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from uniseg3d_model.sparse import functional as F
from uniseg3d_model.sparse import nn as snn
from uniseg3d_model.sparse.tensor import SparseTensor

BACKEND_NAMES = ("auto", "torch", "spconv", "minkowski")


@dataclass(frozen=True)
class Backend:
    """Layer factory of one sparse backend.

    Conv3d(in, out, kernel_size, stride=1, dilation=1, bias=False)
    ConvTranspose3d(in, out, kernel_size, stride, dilation=1, bias=False)
    BatchNorm(num_features, eps=1e-5, momentum=0.1)
    relu(x), cat(a, b): on native tensors; ``+`` adds native tensors on the same coordinates.
    to_native(SparseTensor) -> native; from_native(native, reference SparseTensor) -> SparseTensor
    with rows in the reference's order (the output must be at the reference's stride).
    """

    name: str
    Conv3d: Callable[..., Any]
    ConvTranspose3d: Callable[..., Any]
    BatchNorm: Callable[..., Any]
    relu: Callable[[Any], Any]
    cat: Callable[..., Any]
    to_native: Callable[[SparseTensor], Any]
    from_native: Callable[[Any, SparseTensor], SparseTensor]


def _torch_from_native(out: SparseTensor, ref: SparseTensor) -> SparseTensor:
    if out.stride != ref.stride or out.coords.shape != ref.coords.shape:
        raise ValueError(f"output at stride {out.stride} does not match the input's stride {ref.stride}")
    return out


TORCH_BACKEND = Backend(
    name="torch",
    Conv3d=snn.SparseConv3d,
    ConvTranspose3d=snn.SparseConvTranspose3d,
    BatchNorm=snn.SparseBatchNorm,
    relu=F.relu,
    cat=F.cat,
    to_native=lambda x: x,
    from_native=_torch_from_native,
)


def minkowski_available() -> bool:
    """True when ``MinkowskiEngine`` can be imported (checked without importing torch extensions
    twice)."""
    if importlib.util.find_spec("MinkowskiEngine") is None:
        return False
    try:
        import MinkowskiEngine  # noqa: F401
    except Exception:  # broken builds raise all kinds of errors at import (missing .so, ABI)
        return False
    return True


def spconv_available() -> bool:
    """True when ``spconv.pytorch`` (spconv 2.x) imports."""
    if importlib.util.find_spec("spconv") is None:
        return False
    try:
        import spconv.pytorch  # noqa: F401
    except Exception:  # a wheel for another CUDA/torch raises all kinds of errors at import
        return False
    return True


def get_backend(name: str = "auto") -> Backend:
    """``"torch"``: pure PyTorch (CPU and CUDA). ``"spconv"``: spconv 2.x (error when it does
    not import). ``"minkowski"``: MinkowskiEngine (error when it does not import). ``"auto"``:
    MinkowskiEngine when it imports, else torch."""
    if name not in BACKEND_NAMES:
        raise ValueError(f"backend must be one of {BACKEND_NAMES}, got {name!r}")
    if name == "torch":
        return TORCH_BACKEND
    if name == "spconv":
        if not spconv_available():
            raise ValueError(
                "backend='spconv' requested but spconv.pytorch does not import (pip install spconv)"
            )
        from uniseg3d_model.sparse.spconv_backend import spconv_backend

        return spconv_backend()
    if name == "auto" and not minkowski_available():
        return TORCH_BACKEND
    if name == "minkowski" and not minkowski_available():
        raise ValueError("backend='minkowski' requested but MinkowskiEngine does not import")
    from uniseg3d_model.sparse.minkowski import minkowski_backend

    return minkowski_backend()
