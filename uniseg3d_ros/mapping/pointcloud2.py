"""sensor_msgs/PointCloud2 <-> numpy codec (pure numpy, no ROS imports).

Works on any object with the message's attributes (``height width fields is_bigendian point_step
row_step data is_dense``; fields with ``name offset datatype count``): the real
``sensor_msgs.msg.PointCloud2`` or the small dataclass stand-ins defined here. Decoding is a
zero-copy structured-dtype view of ``data`` (``np.ndarray`` with ``strides=(row_step, point_step)``),
so row padding, point padding, both byte orders and every ``PointField`` datatype are handled without
per-point Python loops.

Color conventions (as PCL / RViz / sensor_msgs_py): a field ``rgb`` or ``rgba`` of datatype FLOAT32,
UINT32 or INT32 holds the 4 bytes of ``0xAARRGGBB`` read as a 32-bit word in the message's byte order
(FLOAT32 is a bit reinterpretation, not a value); alpha is ignored. Separate ``r g b`` fields are also
read: integer types are scaled by the type's maximum, float types are taken as [0, 1] unless their
maximum exceeds 1, then as [0, 255].
"""

from __future__ import annotations

from typing import Any

import numpy as np

from uniseg3d_ros.mapping.cloud_encode import create_cloud, points_to_cloud, segmented_cloud
from uniseg3d_ros.mapping.cloud_types import (
    _DATATYPE_NAMES,
    _XYZ,
    DATATYPES,
    FLOAT32,
    FLOAT64,
    INT8,
    INT16,
    INT32,
    UINT8,
    UINT16,
    UINT32,
    Header,
    PointCloud2,
    PointField,
    pack_rgb,
    unpack_rgb,
)

__all__ = [
    "DATATYPES",
    "FLOAT32",
    "FLOAT64",
    "INT8",
    "INT16",
    "INT32",
    "UINT8",
    "UINT16",
    "UINT32",
    "Header",
    "PointCloud2",
    "PointField",
    "cloud_to_arrays",
    "create_cloud",
    "pack_rgb",
    "points_to_cloud",
    "read_points",
    "segmented_cloud",
    "unpack_rgb",
]


def _field_layout(msg: Any) -> dict[str, tuple[int, np.dtype, int]]:
    """Validate the message header and fields -> {name: (offset, dtype with byte order, count)}."""
    for attr in ("height", "width", "fields", "is_bigendian", "point_step", "row_step", "data"):
        if not hasattr(msg, attr):
            raise ValueError(f"PointCloud2 message has no attribute {attr!r}")
    height, width = int(msg.height), int(msg.width)
    point_step, row_step = int(msg.point_step), int(msg.row_step)
    if height < 0 or width < 0:
        raise ValueError(f"PointCloud2 height/width must be >= 0, got height={height} width={width}")
    order = ">" if msg.is_bigendian else "<"
    layout: dict[str, tuple[int, np.dtype, int]] = {}
    for f in msg.fields:
        name, offset, datatype, count = str(f.name), int(f.offset), int(f.datatype), int(f.count)
        if datatype not in DATATYPES:
            raise ValueError(f"PointField {name!r} has unknown datatype {datatype} (valid: 1..8)")
        if name in layout:
            raise ValueError(f"PointField {name!r} appears twice")
        if count < 1:
            raise ValueError(f"PointField {name!r} has count {count}, expected >= 1")
        dt = np.dtype(order + DATATYPES[datatype])
        if offset < 0 or offset + dt.itemsize * count > point_step:
            raise ValueError(
                f"PointField {name!r} ({_DATATYPE_NAMES[datatype]} x{count} at offset {offset}) does not fit "
                f"in point_step {point_step}"
            )
        layout[name] = (offset, dt, count)
    if height * width > 0:
        if point_step <= 0:
            raise ValueError(f"PointCloud2 point_step must be > 0, got {point_step}")
        if row_step < width * point_step:
            raise ValueError(
                f"PointCloud2 row_step {row_step} is smaller than width*point_step = {width}*{point_step}"
            )
    n_bytes = len(msg.data)
    if n_bytes != row_step * height:
        raise ValueError(
            f"PointCloud2 data length mismatch: len(data)={n_bytes}, expected row_step*height = "
            f"{row_step}*{height} = {row_step * height}"
        )
    return layout


def _buffer(data: Any) -> Any:
    """Objects exposing the buffer protocol pass through; lists of ints become a uint8 array."""
    if isinstance(data, (bytes, bytearray, memoryview, np.ndarray)) or hasattr(data, "buffer_info"):
        return data
    return np.asarray(data, dtype=np.uint8)


def read_points(msg: Any, field_names: list[str] | tuple[str, ...] | None = None) -> np.ndarray:
    """Structured view of the selected fields, shape (height * width,), row-major.

    Field dtypes keep the message's byte order (numpy converts on arithmetic / ``astype``). The result
    is a view of ``msg.data`` when the layout allows it (do not modify it). Fields with ``count > 1``
    become sub-array fields of shape ``(count,)``. Raises ``ValueError`` on malformed messages or
    missing fields.
    """
    layout = _field_layout(msg)
    names = list(layout) if field_names is None else list(field_names)
    for n in names:
        if n not in layout:
            raise ValueError(f"PointCloud2 has no field {n!r} (fields: {list(layout)})")
    fmts = [layout[n][1] if layout[n][2] == 1 else (layout[n][1], (layout[n][2],)) for n in names]
    point_step = int(msg.point_step)
    dtype = np.dtype({"names": names, "formats": fmts, "offsets": [layout[n][0] for n in names],
                      "itemsize": max(point_step, 1)})
    height, width = int(msg.height), int(msg.width)
    if height * width == 0:
        return np.zeros(0, dtype=dtype)
    arr = np.ndarray(shape=(height, width), dtype=dtype, buffer=_buffer(msg.data),
                     strides=(int(msg.row_step), point_step))
    return arr.reshape(-1)


def _packed_color_field(msg: Any, layout: dict, name: str) -> np.dtype:
    offset, dt, count = layout[name]
    if dt.itemsize != 4 or count != 1:
        raise ValueError(
            f"PointField {name!r} must be a single FLOAT32/UINT32/INT32 packed color, got {dt.str} x{count}"
        )
    return np.dtype((">" if msg.is_bigendian else "<") + "u4")


def _channel_to_unit(values: np.ndarray) -> np.ndarray:
    if np.issubdtype(values.dtype, np.integer):
        info = np.iinfo(values.dtype)
        return np.clip(values.astype(np.float32) / np.float32(info.max), 0.0, 1.0)
    v = values.astype(np.float32)
    if v.size and np.nanmax(v) > 1.0:
        v = v / np.float32(255.0)
    return np.clip(v, 0.0, 1.0)


def cloud_to_arrays(
    msg: Any, *, return_index: bool = False
) -> tuple[np.ndarray, np.ndarray | None] | tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """Decode a PointCloud2-like object to arrays.

    Returns:
        points: (N, 3) float32 in the message's ``header.frame_id``; points with a NaN/inf coordinate
            are dropped (whatever ``is_dense`` says).
        colors: (N, 3) float32 in [0, 1] from ``rgb`` / ``rgba`` (packed) or ``r g b`` fields, or ``None``.
        index (only with ``return_index``): (N,) int64 row-major index of each kept point in the
            (height * width) cloud, e.g. to map back to pixels of an organized cloud.

    Raises ``ValueError`` naming the problem for malformed messages (data length, missing x/y/z,
    unknown datatype, fields outside point_step, x/y/z/color field count != 1).
    """
    layout = _field_layout(msg)
    for n in _XYZ:
        if n not in layout:
            raise ValueError(f"PointCloud2 has no field {n!r} (fields: {list(layout)})")
        if layout[n][2] != 1:
            raise ValueError(f"PointField {n!r} has count {layout[n][2]}, expected 1")
    color_names: list[str] = []
    color_kind = None
    for packed in ("rgb", "rgba"):
        if packed in layout:
            color_names, color_kind = [packed], packed
            break
    else:
        if all(c in layout for c in ("r", "g", "b")):
            color_names, color_kind = ["r", "g", "b"], "separate"
            for c in color_names:
                if layout[c][2] != 1:
                    raise ValueError(f"PointField {c!r} has count {layout[c][2]}, expected 1")
    packed_dt = _packed_color_field(msg, layout, color_kind) if color_kind in ("rgb", "rgba") else None

    arr = read_points(msg, list(_XYZ) + color_names)
    n = arr.shape[0]
    pts = np.empty((n, 3), dtype=np.float32)
    pts[:, 0] = arr["x"]
    pts[:, 1] = arr["y"]
    pts[:, 2] = arr["z"]
    finite = np.isfinite(pts[:, 0])  # per column: a reduction along axis 1 is slow in numpy
    finite &= np.isfinite(pts[:, 1])
    finite &= np.isfinite(pts[:, 2])
    all_finite = bool(finite.all())
    index = np.flatnonzero(finite) if (return_index or not all_finite) else None
    if not all_finite:
        pts = pts[index]
    colors = None
    if color_kind in ("rgb", "rgba"):
        raw = arr[color_kind]
        # Reinterpret the 4 bytes (any of FLOAT32/UINT32/INT32) as an unsigned word, same byte order.
        word = np.ascontiguousarray(raw).view(packed_dt)
        colors = unpack_rgb(word if all_finite else word[index])
    elif color_kind == "separate":
        chans = [arr[c] if all_finite else arr[c][index] for c in "rgb"]
        colors = np.stack([_channel_to_unit(ch) for ch in chans], axis=1).astype(np.float32, copy=False)
    if return_index:
        return pts, colors, (index if index is not None else np.arange(n, dtype=np.int64))
    return pts, colors
