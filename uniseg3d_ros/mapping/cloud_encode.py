"""numpy -> sensor_msgs/PointCloud2 encoders (pure numpy, no ROS imports).

``msg_factory`` (e.g. ``sensor_msgs.msg.PointCloud2``) and ``field_factory`` (``PointField``, found next to
the message class when omitted) produce real messages; without them the dataclass stand-ins are used.
Import these through ``uniseg3d_ros.mapping.pointcloud2``.
"""

from __future__ import annotations

import array
import sys
from collections.abc import Callable
from typing import Any

import numpy as np

from uniseg3d_ros.mapping.cloud_types import _NUMPY_TO_DATATYPE, _XYZ, PointCloud2, PointField, pack_rgb

__all__ = ["create_cloud", "points_to_cloud", "segmented_cloud"]


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
