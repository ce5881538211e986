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

import array
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "DATATYPES",
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


# --------------------------------------------------------------------------- decoding


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


def unpack_rgb(packed: np.ndarray) -> np.ndarray:
    """(N,) uint32 ``0x00RRGGBB`` (alpha byte ignored) -> (N, 3) float32 in [0, 1]."""
    p = np.ascontiguousarray(np.asarray(packed).astype("<u4", copy=False))
    rgb = p.view(np.uint8).reshape(-1, 4)[:, 2::-1]  # little-endian bytes are B G R A
    out = rgb.astype(np.float32)
    out *= np.float32(1.0 / 255.0)
    return out


def pack_rgb(colors: np.ndarray) -> np.ndarray:
    """(N, 3) float in [0, 1] (clipped, NaN -> 0) or uint8 -> (N,) uint32 ``0x00RRGGBB``."""
    c = np.asarray(colors)
    if c.ndim != 2 or c.shape[1] != 3:
        raise ValueError(f"colors must be (N, 3), got shape {c.shape}")
    if c.dtype != np.uint8:
        f = np.fmax(c.astype(np.float32), np.float32(0.0))  # fmax maps NaN to 0
        np.fmin(f, np.float32(1.0), out=f)
        f *= np.float32(255.0)
        c = np.rint(f, out=f).astype(np.uint8)
    bgra = np.zeros((c.shape[0], 4), np.uint8)
    bgra[:, 2::-1] = c
    return bgra.view("<u4").reshape(-1).astype(np.uint32, copy=False)


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


# --------------------------------------------------------------------------- encoding


def _resolve_factories(msg_factory: Callable[[], Any] | None,
                       field_factory: Callable[..., Any] | None) -> tuple[Callable, Callable]:
    if msg_factory is None:
        return PointCloud2, (field_factory or PointField)
    if field_factory is None:
        mod_name = getattr(msg_factory, "__module__", "")
        for name in (mod_name, mod_name.rsplit(".", 1)[0]):
            mod = sys.modules.get(name)
            if mod is not None and hasattr(mod, "PointField"):
                field_factory = mod.PointField
                break
        else:
            raise ValueError(f"no PointField next to msg_factory {msg_factory!r}; pass field_factory")
    return msg_factory, field_factory


def _set_header(msg: Any, header: Any) -> None:
    """Assign ``header``; a header of another type (e.g. the stand-in on a real message) is copied
    field by field into the message's own header type (``frame_id``; ``stamp`` as Time or seconds)."""
    own = getattr(msg, "header", None)
    if own is None or type(own) is type(header):
        msg.header = header
        return
    own.frame_id = str(getattr(header, "frame_id", ""))
    stamp = getattr(header, "stamp", None)
    if stamp is None:
        pass
    elif type(stamp) is type(own.stamp):
        own.stamp = stamp
    elif hasattr(stamp, "sec"):
        own.stamp.sec, own.stamp.nanosec = int(stamp.sec), int(getattr(stamp, "nanosec", 0))
    else:
        ns = int(round(float(stamp) * 1e9))
        own.stamp.sec, own.stamp.nanosec = ns // 1_000_000_000, ns % 1_000_000_000
    msg.header = own


def create_cloud(
    header: Any,
    values: np.ndarray,
    *,
    is_bigendian: bool = False,
    point_step: int | None = None,
    msg_factory: Callable[[], Any] | None = None,
    field_factory: Callable[..., Any] | None = None,
) -> Any:
    """Encode a numpy structured array as a PointCloud2 (or a ``msg_factory()`` instance).

    Args:
        header: the message header (``std_msgs/Header`` or the ``Header`` stand-in); ``None`` keeps the
            factory's default.
        values: structured array of shape (N,) (unorganized, height 1) or (H, W) (organized); every field
            a scalar of int8/uint8/int16/uint16/int32/uint32/float32/float64.
        is_bigendian: byte order of ``data``.
        point_step: bytes per point, >= the packed size of the fields (extra bytes are zero padding).
        msg_factory: e.g. ``sensor_msgs.msg.PointCloud2``; default the stand-in dataclass.
        field_factory: e.g. ``sensor_msgs.msg.PointField``; found next to ``msg_factory`` when omitted.
    """
    v = np.asarray(values)
    if v.dtype.names is None:
        raise ValueError(f"values must be a structured array, got dtype {v.dtype}")
    if v.ndim not in (1, 2):
        raise ValueError(f"values must have shape (N,) or (H, W), got {v.shape}")
    height, width = (1, v.shape[0]) if v.ndim == 1 else v.shape
    order = ">" if is_bigendian else "<"
    names, formats, offsets, dts = [], [], [], []
    offset = 0
    for name in v.dtype.names:
        base = v.dtype.fields[name][0]
        if base.shape != () or base.str[1:] not in _NUMPY_TO_DATATYPE:
            raise ValueError(f"field {name!r} has unsupported dtype {base} (PointField types only)")
        dt = np.dtype(order + base.str[1:])
        names.append(name)
        formats.append(dt)
        offsets.append(offset)
        dts.append(_NUMPY_TO_DATATYPE[base.str[1:]])
        offset += dt.itemsize
    step = offset if point_step is None else int(point_step)
    if step < offset:
        raise ValueError(f"point_step {step} is smaller than the packed field size {offset}")
    packed = np.dtype({"names": names, "formats": formats, "offsets": offsets, "itemsize": step})
    flat = v.reshape(-1)
    if flat.dtype == packed:  # already in wire layout: no per-field copy
        out = flat
    else:
        out = np.zeros(height * width, dtype=packed)
        for name in names:
            out[name] = flat[name]
    make_msg, make_field = _resolve_factories(msg_factory, field_factory)
    msg = make_msg()
    if header is not None:
        _set_header(msg, header)
    msg.height, msg.width = int(height), int(width)
    msg.fields = [make_field(name=n, offset=int(o), datatype=int(d), count=1)
                  for n, o, d in zip(names, offsets, dts)]
    msg.is_bigendian = bool(is_bigendian)
    msg.point_step = int(step)
    msg.row_step = int(step * width)
    if msg_factory is None:
        msg.data = out.tobytes()
    else:  # rclpy takes array("B") as is; bytes are checked byte by byte if ROS_PYTHON_CHECK_FIELDS=1
        data = array.array("B")
        data.frombytes(out.tobytes())
        msg.data = data
    xyz = [n for n in _XYZ if n in names]
    msg.is_dense = bool(all(np.isfinite(flat[n]).all() for n in xyz)) if xyz else True
    return msg


def _check_points(points: np.ndarray) -> np.ndarray:
    p = np.asarray(points)
    if p.ndim != 2 or p.shape[1] != 3:
        raise ValueError(f"points must be (N, 3), got shape {p.shape}")
    return p


def points_to_cloud(
    header: Any,
    points: np.ndarray,
    colors: np.ndarray | None = None,
    *,
    msg_factory: Callable[[], Any] | None = None,
    field_factory: Callable[..., Any] | None = None,
    is_bigendian: bool = False,
) -> Any:
    """(N, 3) points (+ optional (N, 3) colors in [0, 1]) -> cloud with fields ``x y z [rgb]``
    (FLOAT32, ``rgb`` packed as a float32 bit pattern as RViz expects)."""
    p = _check_points(points)
    fields = [("x", "<f4"), ("y", "<f4"), ("z", "<f4")] + ([("rgb", "<f4")] if colors is not None else [])
    vals = np.zeros(p.shape[0], dtype=fields)
    vals["x"], vals["y"], vals["z"] = p[:, 0], p[:, 1], p[:, 2]
    if colors is not None:
        c = np.asarray(colors)
        if c.shape != p.shape:
            raise ValueError(f"colors must have shape {p.shape} like points, got {c.shape}")
        vals["rgb"] = pack_rgb(c).view(np.float32)
    return create_cloud(header, vals, is_bigendian=is_bigendian, msg_factory=msg_factory,
                        field_factory=field_factory)


def segmented_cloud(
    header: Any,
    points: np.ndarray,
    colors: np.ndarray | None,
    label: np.ndarray,
    instance: np.ndarray,
    msg_factory: Callable[[], Any] | None = None,
    *,
    field_factory: Callable[..., Any] | None = None,
    is_bigendian: bool = False,
) -> Any:
    """The segmented output cloud: fields ``x y z rgb label instance``.

    Args:
        points: (N, 3) float, metres, in ``header.frame_id``.
        colors: (N, 3) float in [0, 1] or uint8; ``None`` -> mid grey.
        label: (N,) int semantic class id (``-100``/``-1`` for none), encoded INT32.
        instance: (N,) int instance id (-1 for stuff / none), encoded INT32.
    Layout: x y z FLOAT32 at 0/4/8, rgb FLOAT32 (packed 0x00RRGGBB) at 12, label INT32 at 16,
    instance INT32 at 20; point_step 24.
    """
    p = _check_points(points)
    n = p.shape[0]
    lab, ins = np.asarray(label), np.asarray(instance)
    for name, a in (("label", lab), ("instance", ins)):
        if a.shape != (n,):
            raise ValueError(f"{name} must have shape ({n},) like points, got {a.shape}")
        if not np.issubdtype(a.dtype, np.integer):
            raise ValueError(f"{name} must be an integer array, got dtype {a.dtype}")
        if a.size and (a.min() < np.iinfo(np.int32).min or a.max() > np.iinfo(np.int32).max):
            raise ValueError(f"{name} values exceed the INT32 range")
    c = np.full((n, 3), 0.5, dtype=np.float32) if colors is None else np.asarray(colors)
    if c.shape != (n, 3):
        raise ValueError(f"colors must have shape ({n}, 3) like points, got {c.shape}")
    vals = np.zeros(n, dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("rgb", "<f4"),
                              ("label", "<i4"), ("instance", "<i4")])
    vals["x"], vals["y"], vals["z"] = p[:, 0], p[:, 1], p[:, 2]
    vals["rgb"] = pack_rgb(c).view(np.float32)
    vals["label"] = lab
    vals["instance"] = ins
    return create_cloud(header, vals, is_bigendian=is_bigendian, msg_factory=msg_factory,
                        field_factory=field_factory)
