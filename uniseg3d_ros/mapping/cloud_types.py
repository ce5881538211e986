"""PointCloud2 building blocks shared by the decoder and the encoder (pure numpy, no ROS imports):
``PointField`` datatype constants, dataclass stand-ins for the ROS messages, and packed-RGB helpers."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["DATATYPES", "Header", "PointCloud2", "PointField", "check_unit_colors", "pack_rgb", "unpack_rgb"]

# PointField datatype constants -> numpy base type (byte order added per message).
INT8, UINT8, INT16, UINT16, INT32, UINT32, FLOAT32, FLOAT64 = range(1, 9)
DATATYPES: dict[int, str] = {
    INT8: "i1", UINT8: "u1", INT16: "i2", UINT16: "u2",
    INT32: "i4", UINT32: "u4", FLOAT32: "f4", FLOAT64: "f8",
}
_DATATYPE_NAMES = {1: "INT8", 2: "UINT8", 3: "INT16", 4: "UINT16", 5: "INT32", 6: "UINT32",
                   7: "FLOAT32", 8: "FLOAT64"}
_NUMPY_TO_DATATYPE = {np.dtype(v).newbyteorder("=").str[1:]: k for k, v in DATATYPES.items()}
_XYZ = ("x", "y", "z")


@dataclass
class Header:
    """Stand-in for std_msgs/Header."""

    stamp: Any = None
    frame_id: str = ""


@dataclass
class PointField:
    """Stand-in for sensor_msgs/PointField (same attribute names and constants)."""

    name: str = ""
    offset: int = 0
    datatype: int = 0
    count: int = 1
    INT8 = INT8
    UINT8 = UINT8
    INT16 = INT16
    UINT16 = UINT16
    INT32 = INT32
    UINT32 = UINT32
    FLOAT32 = FLOAT32
    FLOAT64 = FLOAT64


@dataclass
class PointCloud2:
    """Stand-in for sensor_msgs/PointCloud2 (same attribute names)."""

    header: Any = field(default_factory=Header)
    height: int = 0
    width: int = 0
    fields: list = field(default_factory=list)
    is_bigendian: bool = False
    point_step: int = 0
    row_step: int = 0
    data: bytes = b""
    is_dense: bool = False


def unpack_rgb(packed: np.ndarray) -> np.ndarray:
    """(N,) uint32 ``0x00RRGGBB`` (alpha byte ignored) -> (N, 3) float32 in [0, 1]."""
    p = np.ascontiguousarray(np.asarray(packed).astype("<u4", copy=False))
    rgb = p.view(np.uint8).reshape(-1, 4)[:, 2::-1]  # little-endian bytes are B G R A
    out = rgb.astype(np.float32)
    out *= np.float32(1.0 / 255.0)
    return out


def check_unit_colors(colors: np.ndarray, name: str = "colors") -> None:
    """Raise ``ValueError`` unless ``colors`` is uint8 or float with finite values in [0, 1] (+-1e-3)."""
    if colors.dtype == np.uint8:
        return
    if not np.issubdtype(colors.dtype, np.floating):
        raise ValueError(f"{name} must be uint8 (0-255) or float in [0, 1], got dtype {colors.dtype}")
    if colors.size:
        lo, hi = colors.min(), colors.max()
        if np.isnan(lo) or np.isnan(hi):  # NaN colors are accepted (mapped later); check the rest
            with np.errstate(invalid="ignore"), warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN input
                lo, hi = np.nanmin(colors), np.nanmax(colors)
        if lo < -1e-3 or hi > 1.0 + 1e-3:
            raise ValueError(f"{name} must be in [0, 1] for float dtype, got range [{lo:g}, {hi:g}] "
                             "(pass uint8 for 0-255 values)")


def pack_rgb(colors: np.ndarray) -> np.ndarray:
    """(N, 3) uint8, or float in [0, 1] (NaN -> 0; values outside [-1e-3, 1 + 1e-3] are an error,
    e.g. 0-255 floats) -> (N,) uint32 ``0x00RRGGBB``."""
    c = np.asarray(colors)
    if c.ndim != 2 or c.shape[1] != 3:
        raise ValueError(f"colors must be (N, 3), got shape {c.shape}")
    check_unit_colors(c)
    if c.dtype != np.uint8:
        f = np.fmax(c.astype(np.float32), np.float32(0.0))  # fmax maps NaN to 0
        np.fmin(f, np.float32(1.0), out=f)
        f *= np.float32(255.0)
        c = np.rint(f, out=f).astype(np.uint8)
    bgra = np.zeros((c.shape[0], 4), np.uint8)
    bgra[:, 2::-1] = c
    return bgra.view("<u4").reshape(-1).astype(np.uint32, copy=False)
