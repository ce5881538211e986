"""PointCloud2 codec: every datatype and byte order, padding, organized clouds, colors, NaNs, malformed
messages, and round trips through real sensor_msgs messages."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from uniseg3d_ros.mapping import pointcloud2 as pc2
from uniseg3d_ros.mapping.pointcloud2 import PointCloud2, PointField

STRUCT_CODES = {1: "b", 2: "B", 3: "h", 4: "H", 5: "i", 6: "I", 7: "f", 8: "d"}
NUMPY_CODES = {1: "i1", 2: "u1", 3: "i2", 4: "u2", 5: "i4", 6: "u4", 7: "f4", 8: "f8"}


def sample_values(datatype: int, n: int, rng) -> np.ndarray:
    dt = np.dtype(NUMPY_CODES[datatype])
    if dt.kind == "f":
        return rng.normal(0, 100, n).astype(dt)
    info = np.iinfo(dt)
    v = rng.integers(info.min, info.max, n, endpoint=True, dtype=dt)
    v[:2] = info.min, info.max
    return v


def packed_cloud(rows: list[tuple], fields: list[tuple[str, int, int]], point_step: int, bigendian: bool,
                 height: int = 1, row_pad: int = 0) -> PointCloud2:
    """Independent encoder: pack each value with ``struct`` at its offset (padding bytes = 0xAB)."""
    order = ">" if bigendian else "<"
    width = len(rows) // height
    row_step = width * point_step + row_pad
    data = bytearray(b"\xab" * (row_step * height))
    for i, row in enumerate(rows):
        base = (i // width) * row_step + (i % width) * point_step
        for (_, offset, datatype), value in zip(fields, row):
            struct.pack_into(order + STRUCT_CODES[datatype], data, base + offset, value)
    return PointCloud2(height=height, width=width, is_bigendian=bigendian, point_step=point_step,
                       row_step=row_step, data=bytes(data),
                       fields=[PointField(name=n, offset=o, datatype=d, count=1) for n, o, d in fields])


@pytest.mark.parametrize("bigendian", [False, True])
@pytest.mark.parametrize("datatype", range(1, 9))
def test_every_datatype_decodes_from_independently_packed_bytes(datatype: int, bigendian: bool):
    rng = np.random.default_rng(datatype)
    vals = sample_values(datatype, 7, rng)
    xyz = rng.normal(size=(7, 3)).astype(np.float32)
    size = np.dtype(NUMPY_CODES[datatype]).itemsize
    fields = [("x", 0, 7), ("y", 4, 7), ("z", 8, 7), ("v", 13, datatype)]  # odd offset, padding after
    msg = packed_cloud([(*p, v.item()) for p, v in zip(xyz, vals)], fields, 13 + size + 3, bigendian)
    out = pc2.read_points(msg, ["x", "y", "z", "v"])
    np.testing.assert_array_equal(out["v"], vals)
    pts, colors = pc2.cloud_to_arrays(msg)
    np.testing.assert_array_equal(pts, xyz)
    assert colors is None


@pytest.mark.parametrize("bigendian", [False, True])
def test_create_cloud_round_trips_all_datatypes(bigendian: bool):
    rng = np.random.default_rng(3)
    n = 50
    dtype = [("x", "f4"), ("y", "f4"), ("z", "f4")] + [(f"f{d}", NUMPY_CODES[d]) for d in range(1, 9)]
    vals = np.zeros(n, dtype=dtype)
    vals["x"], vals["y"], vals["z"] = rng.normal(size=(3, n))
    for d in range(1, 9):
        vals[f"f{d}"] = sample_values(d, n, rng)
    msg = pc2.create_cloud(None, vals, is_bigendian=bigendian, point_step=64)
    assert msg.point_step == 64 and msg.row_step == 64 * n and len(msg.data) == 64 * n
    assert [f.datatype for f in msg.fields] == [7, 7, 7, 1, 2, 3, 4, 5, 6, 7, 8]
    back = pc2.read_points(msg)
    for name in vals.dtype.names:
        np.testing.assert_array_equal(back[name], vals[name])
    # The encoder's bytes agree with struct packing.
    order = ">" if bigendian else "<"
    assert struct.unpack_from(order + "d", msg.data, 64 + msg.fields[-1].offset)[0] == vals["f8"][1]


def test_organized_cloud_with_row_padding_and_nans():
    rng = np.random.default_rng(4)
    h, w = 4, 5
    xyz = rng.normal(size=(h * w, 3)).astype(np.float32)
    xyz[[3, 11]] = np.nan
    xyz[7, 2] = np.inf
    fields = [("x", 0, 7), ("y", 4, 7), ("z", 8, 7)]
    msg = packed_cloud([tuple(p) for p in xyz], fields, 16, False, height=h, row_pad=6)
    msg.is_dense = False
    pts, _, idx = pc2.cloud_to_arrays(msg, return_index=True)
    keep = np.setdiff1d(np.arange(h * w), [3, 7, 11])
    np.testing.assert_array_equal(idx, keep)
    np.testing.assert_array_equal(pts, xyz[keep])
    assert pc2.read_points(msg).shape == (h * w,)


@pytest.mark.parametrize("bigendian", [False, True])
@pytest.mark.parametrize(("name", "datatype"), [("rgb", 7), ("rgb", 6), ("rgba", 6), ("rgba", 7), ("rgb", 5)])
def test_packed_colors_decode(name: str, datatype: int, bigendian: bool):
    rgb8 = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 255], [12, 34, 56]], np.uint32)
    word = (np.uint32(0x80) << 24) | (rgb8[:, 0] << 16) | (rgb8[:, 1] << 8) | rgb8[:, 2]  # alpha 0x80
    raw = word.astype(NUMPY_CODES[datatype].replace("f4", "u4")).view(NUMPY_CODES[datatype])
    fields = [("x", 0, 7), ("y", 4, 7), ("z", 8, 7), (name, 16, datatype)]
    rows = [(float(i), 0.0, 1.0, v.item()) for i, v in enumerate(raw)]
    if datatype == 7:  # struct would canonicalize NaN payloads; write the raw words instead
        rows = [(float(i), 0.0, 1.0, 0.0) for i in range(len(raw))]
    msg = packed_cloud(rows, fields, 20, bigendian)
    if datatype == 7:
        data = bytearray(msg.data)
        for i, wv in enumerate(word):
            struct.pack_into((">" if bigendian else "<") + "I", data, i * 20 + 16, int(wv))
        msg.data = bytes(data)
    _, colors = pc2.cloud_to_arrays(msg)
    np.testing.assert_allclose(colors, rgb8 / 255.0, atol=1e-7)


@pytest.mark.parametrize(("datatype", "values", "expected"), [
    (2, [0, 128, 255], [0.0, 128 / 255, 1.0]),
    (7, [0.0, 0.5, 1.0], [0.0, 0.5, 1.0]),
    (7, [0.0, 127.5, 255.0], [0.0, 0.5, 1.0]),
    (4, [0, 65535, 0], [0.0, 1.0, 0.0]),
])
def test_separate_rgb_fields_decode(datatype, values, expected):
    size = np.dtype(NUMPY_CODES[datatype]).itemsize
    fields = [("x", 0, 7), ("y", 4, 7), ("z", 8, 7), ("r", 12, datatype), ("g", 12 + size, datatype),
              ("b", 12 + 2 * size, datatype)]
    msg = packed_cloud([(0.0, 0.0, 0.0, v, v, v) for v in values], fields, 12 + 3 * size, False)
    _, colors = pc2.cloud_to_arrays(msg)
    np.testing.assert_allclose(colors, np.repeat(np.array(expected)[:, None], 3, 1), atol=1e-6)


def test_segmented_cloud_layout_and_values():
    rng = np.random.default_rng(5)
    pts = rng.normal(size=(30, 3)).astype(np.float32)
    cols = rng.random((30, 3)).astype(np.float32)
    label, inst = rng.integers(-100, 20, 30), rng.integers(-1, 5, 30)
    msg = pc2.segmented_cloud(pc2.Header(frame_id="map"), pts, cols, label, inst)
    assert [(f.name, f.offset, f.datatype, f.count) for f in msg.fields] == [
        ("x", 0, 7, 1), ("y", 4, 7, 1), ("z", 8, 7, 1), ("rgb", 12, 7, 1), ("label", 16, 5, 1),
        ("instance", 20, 5, 1)]
    assert (msg.point_step, msg.row_step, msg.height, msg.width, msg.is_dense) == (24, 720, 1, 30, True)
    assert msg.header.frame_id == "map"
    p, c = pc2.cloud_to_arrays(msg)
    np.testing.assert_array_equal(p, pts)
    np.testing.assert_allclose(c, np.rint(cols * 255) / 255, atol=1e-7)
    back = pc2.read_points(msg, ["label", "instance"])
    np.testing.assert_array_equal(back["label"], label)
    np.testing.assert_array_equal(back["instance"], inst)


def test_encoder_marks_nan_clouds_not_dense():
    pts = np.array([[0, 0, 0], [np.nan, 1, 1]], np.float32)
    msg = pc2.points_to_cloud(None, pts)
    assert msg.is_dense is False
    assert pc2.cloud_to_arrays(msg)[0].shape == (1, 3)


def good_msg() -> PointCloud2:
    return packed_cloud([(1.0, 2.0, 3.0, 1)] * 4, [("x", 0, 7), ("y", 4, 7), ("z", 8, 7), ("rgb", 12, 6)],
                        16, False)


@pytest.mark.parametrize(("mutate", "match"), [
    (lambda m: setattr(m, "data", m.data[:-1]), "data length mismatch"),
    (lambda m: (setattr(m, "width", 5), setattr(m, "row_step", 80)), "data length mismatch"),
    (lambda m: setattr(m, "width", 5), "row_step 64 is smaller"),
    (lambda m: m.fields.pop(1), "no field 'y'"),
    (lambda m: setattr(m.fields[3], "datatype", 9), "unknown datatype 9"),
    (lambda m: setattr(m.fields[2], "datatype", 0), "unknown datatype 0"),
    (lambda m: setattr(m, "point_step", 14), "does not fit in point_step"),
    (lambda m: setattr(m.fields[0], "offset", 13), "does not fit in point_step"),
    (lambda m: setattr(m.fields[0], "count", 2), "'x' has count 2"),
    (lambda m: setattr(m.fields[3], "count", 0), "count 0"),
    (lambda m: setattr(m.fields[1], "name", "x"), "appears twice"),
    (lambda m: setattr(m, "row_step", 15), "row_step"),
    (lambda m: setattr(m.fields[3], "datatype", 2), "packed color"),
])
def test_malformed_messages_raise_named_errors(mutate, match):
    msg = good_msg()
    pc2.cloud_to_arrays(msg)  # the unmodified message decodes
    mutate(msg)
    with pytest.raises(ValueError, match=match):
        pc2.cloud_to_arrays(msg)


def test_extra_fields_with_count_above_one_are_skipped():
    msg = good_msg()
    msg.point_step, msg.row_step = 24, 96
    msg.data = b"".join(good_msg().data[i * 16:(i + 1) * 16] + b"\0" * 8 for i in range(4))
    msg.fields.append(PointField(name="descriptor", offset=16, datatype=2, count=8))
    pts, _ = pc2.cloud_to_arrays(msg)
    np.testing.assert_array_equal(pts, np.tile([1.0, 2.0, 3.0], (4, 1)))
    assert pc2.read_points(msg, ["descriptor"])["descriptor"].shape == (4, 8)


def test_bad_encoder_inputs_raise():
    with pytest.raises(ValueError, match="label"):
        pc2.segmented_cloud(None, np.zeros((3, 3)), None, np.zeros(2, int), np.zeros(3, int))
    with pytest.raises(ValueError, match="instance"):
        pc2.segmented_cloud(None, np.zeros((3, 3)), None, np.zeros(3, int), np.zeros(3))
    with pytest.raises(ValueError, match="point_step"):
        pc2.create_cloud(None, np.zeros(3, [("x", "f4"), ("y", "f8")]), point_step=8)
    with pytest.raises(ValueError, match="unsupported dtype"):
        pc2.create_cloud(None, np.zeros(3, [("x", "f2")]))


# --------------------------------------------------------------------------- real sensor_msgs


@pytest.mark.ros
def test_round_trip_through_real_sensor_msgs():
    msgs = pytest.importorskip("sensor_msgs.msg")
    std = pytest.importorskip("std_msgs.msg")
    rng = np.random.default_rng(6)
    pts = rng.normal(size=(100, 3)).astype(np.float32)
    cols = rng.integers(0, 256, (100, 3)).astype(np.uint8)
    label, inst = rng.integers(0, 20, 100), rng.integers(-1, 6, 100)
    msg = pc2.segmented_cloud(std.Header(frame_id="map"), pts, cols, label, inst,
                              msg_factory=msgs.PointCloud2)
    assert isinstance(msg, msgs.PointCloud2) and isinstance(msg.fields[0], msgs.PointField)
    assert msg.fields[3].datatype == msgs.PointField.FLOAT32
    assert msg.fields[4].datatype == msgs.PointField.INT32
    p, c = pc2.cloud_to_arrays(msg)
    np.testing.assert_array_equal(p, pts)
    np.testing.assert_allclose(c, cols / 255.0, atol=1e-7)
    np.testing.assert_array_equal(pc2.read_points(msg, ["instance"])["instance"], inst)
    # Through the wire format (CDR) as a subscriber receives it.
    ser = pytest.importorskip("rclpy.serialization")
    wire = ser.deserialize_message(ser.serialize_message(msg), msgs.PointCloud2)
    p2, c2 = pc2.cloud_to_arrays(wire)
    np.testing.assert_array_equal(p2, pts)
    np.testing.assert_array_equal(c2, c)
    assert wire.header.frame_id == "map"


@pytest.mark.ros
def test_real_message_with_field_checks_enabled():
    msgs = pytest.importorskip("sensor_msgs.msg")
    pts = np.random.default_rng(8).normal(size=(50_000, 3)).astype(np.float32)
    msg = pc2.segmented_cloud(pc2.Header(frame_id="map", stamp=1.5), pts, None, np.zeros(50_000, int),
                              np.full(50_000, -1), msg_factory=lambda: msgs.PointCloud2(check_fields=True),
                              field_factory=msgs.PointField)
    assert msg.header.frame_id == "map" and msg.width == 50_000
    np.testing.assert_array_equal(pc2.cloud_to_arrays(msg)[0], pts)


@pytest.mark.ros
def test_stand_in_header_is_copied_into_a_real_message():
    msgs = pytest.importorskip("sensor_msgs.msg")
    ser = pytest.importorskip("rclpy.serialization")
    msg = pc2.points_to_cloud(pc2.Header(frame_id="cam", stamp=12.25), np.zeros((2, 3)),
                              msg_factory=msgs.PointCloud2)
    assert type(msg.header).__module__.startswith("std_msgs")
    assert (msg.header.frame_id, msg.header.stamp.sec, msg.header.stamp.nanosec) == ("cam", 12, 250_000_000)
    wire = ser.deserialize_message(ser.serialize_message(msg), msgs.PointCloud2)
    assert wire.header.frame_id == "cam"


@pytest.mark.ros
@pytest.mark.parametrize("bigendian", [False, True])
def test_decodes_a_hand_built_real_message(bigendian: bool):
    msgs = pytest.importorskip("sensor_msgs.msg")
    ref = good_msg() if not bigendian else packed_cloud(
        [(1.0, 2.0, 3.0, 1)] * 4, [("x", 0, 7), ("y", 4, 7), ("z", 8, 7), ("rgb", 12, 6)], 16, True)
    msg = msgs.PointCloud2(height=1, width=4, is_bigendian=bigendian, point_step=16, row_step=64,
                           is_dense=True, data=ref.data,
                           fields=[msgs.PointField(name=f.name, offset=f.offset, datatype=f.datatype, count=1)
                                   for f in ref.fields])
    p, c = pc2.cloud_to_arrays(msg)
    np.testing.assert_array_equal(p, np.tile([1.0, 2.0, 3.0], (4, 1)))
    np.testing.assert_allclose(c, np.tile([0, 0, 1 / 255], (4, 1)), atol=1e-7)


@pytest.mark.ros
def test_matches_sensor_msgs_py_when_available():
    ros_pc2 = pytest.importorskip("sensor_msgs_py.point_cloud2")
    msgs = pytest.importorskip("sensor_msgs.msg")
    std = pytest.importorskip("std_msgs.msg")
    pts = np.random.default_rng(7).normal(size=(20, 3)).astype(np.float32)
    ours = pc2.points_to_cloud(std.Header(), pts, msg_factory=msgs.PointCloud2)
    theirs = ros_pc2.create_cloud_xyz32(std.Header(), pts.tolist())
    assert bytes(ours.data) == bytes(theirs.data)
    assert [(f.name, f.offset, f.datatype) for f in ours.fields] == [
        (f.name, f.offset, f.datatype) for f in theirs.fields]
    np.testing.assert_array_equal(pc2.cloud_to_arrays(theirs)[0], ros_pc2.read_points_numpy(theirs))


def test_encoder_rejects_0_255_float_colors():
    with pytest.raises(ValueError, match="0-255"):
        pc2.points_to_cloud(None, np.zeros((2, 3)), np.full((2, 3), 200.0))
    msg = pc2.points_to_cloud(None, np.zeros((2, 3)), np.array([[np.nan, 0.5, 1.0005], [0, 0, 0]]))
    np.testing.assert_allclose(pc2.cloud_to_arrays(msg)[1], [[0, 128 / 255, 1], [0, 0, 0]], atol=1e-7)


@pytest.mark.parametrize("wrap", [bytes, bytearray, list, lambda b: np.frombuffer(b, np.uint8), memoryview])
def test_data_buffer_types_decode_alike(wrap):
    msg = good_msg()
    msg.data = wrap(msg.data)
    pts, colors = pc2.cloud_to_arrays(msg)
    np.testing.assert_array_equal(pts, np.tile([1.0, 2.0, 3.0], (4, 1)))
    assert colors.shape == (4, 3)
