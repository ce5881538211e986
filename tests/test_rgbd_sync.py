"""RGBDSynchronizer: stamp matching within tolerance, bounded buffers, drop accounting."""

import numpy as np
import pytest

from uniseg3d_ros.mapping.rgbd_sync import RGBDSynchronizer


def test_emits_frame_once_all_three_streams_match():
    sync = RGBDSynchronizer(tolerance=0.01, buffer_size=5)
    assert sync.add_depth(1.000, "d1") is None
    assert sync.add_color(1.004, "c1") is None
    frame = sync.add_info(0.998, "i1")
    assert frame is not None
    assert (frame.stamp, frame.depth, frame.color, frame.info) == (1.0, "d1", "c1", "i1")
    assert len(sync) == 0 and sync.matched == 1


def test_out_of_tolerance_streams_do_not_match():
    sync = RGBDSynchronizer(tolerance=0.01, buffer_size=5)
    sync.add_depth(1.0, "d")
    sync.add_info(1.0, "i")
    assert sync.add_color(1.05, "c") is None
    assert sync.matched == 0 and len(sync) == 3


def test_picks_nearest_color_and_drops_older_items():
    sync = RGBDSynchronizer(tolerance=0.05, buffer_size=10)
    sync.add_color(0.90, "c_old")
    sync.add_color(0.98, "c_far")
    sync.add_color(1.01, "c_near")
    sync.add_info(1.0, "i")
    frame = sync.add_depth(1.0, "d")
    assert frame.color == "c_near"
    # the two older colors can never match a later depth image: dropped and counted
    assert sync.dropped["color"] == 2 and len(sync) == 0


def test_buffer_is_bounded_and_counts_evictions():
    sync = RGBDSynchronizer(tolerance=0.001, buffer_size=4)
    for k in range(100):
        sync.add_depth(float(k), k)  # no color/info ever arrives
    assert len(sync) == 4
    assert sync.dropped["depth"] == 96


def test_stream_of_frames_all_match_in_order():
    sync = RGBDSynchronizer(tolerance=0.005, buffer_size=3)
    out = []
    for k in range(20):
        t = 0.1 * k
        for stream, item in (("color", f"c{k}"), ("depth", f"d{k}"), ("info", f"i{k}")):
            frame = sync.add(stream, t + 0.001, item) if stream == "color" else sync.add(stream, t, item)
            if frame is not None:
                out.append(frame)
    assert [f.depth for f in out] == [f"d{k}" for k in range(20)]
    assert all(f.color == f"c{k}" and f.info == f"i{k}" for k, f in enumerate(out))
    assert sum(sync.dropped.values()) == 0


def test_bad_arguments_raise_naming_the_field():
    with pytest.raises(ValueError, match="tolerance"):
        RGBDSynchronizer(tolerance=-1)
    with pytest.raises(ValueError, match="buffer_size"):
        RGBDSynchronizer(buffer_size=0)
    with pytest.raises(ValueError, match="stream"):
        RGBDSynchronizer().add("ir", 0.0, None)


def _image(array, encoding=None, pad=0):
    from types import SimpleNamespace

    from uniseg3d_ros.mapping.rgbd_sync import array_to_image_fields

    f = array_to_image_fields(array)
    if encoding is not None:
        f["encoding"] = encoding
    if pad:  # rows padded to a larger step, as some drivers do
        rows = np.frombuffer(f["data"], np.uint8).reshape(f["height"], f["step"])
        f["data"] = np.pad(rows, ((0, 0), (0, pad))).tobytes()
        f["step"] += pad
    return SimpleNamespace(**f)


def test_image_round_trip_depth_and_color_with_row_padding():
    from uniseg3d_ros.mapping.rgbd_sync import image_to_array

    rng = np.random.default_rng(0)
    depth = rng.integers(0, 5000, size=(4, 6), dtype=np.uint16)
    color = rng.integers(0, 255, size=(4, 6, 3), dtype=np.uint8)
    metres = rng.random((4, 6), dtype=np.float32)
    np.testing.assert_array_equal(image_to_array(_image(depth, pad=4)), depth)
    np.testing.assert_array_equal(image_to_array(_image(color, pad=2)), color)
    np.testing.assert_array_equal(image_to_array(_image(metres)), metres)


def test_bgr_image_is_reordered_to_rgb():
    from uniseg3d_ros.mapping.rgbd_sync import image_to_array

    color = np.zeros((2, 2, 3), np.uint8)
    color[..., 0] = 200  # stored as B in a bgr8 image
    out = image_to_array(_image(color, encoding="bgr8"))
    assert (out[..., 2] == 200).all() and (out[..., 0] == 0).all()


def test_bad_images_raise_naming_the_problem():
    from uniseg3d_ros.mapping.rgbd_sync import image_to_array

    with pytest.raises(ValueError, match="encoding"):
        image_to_array(_image(np.zeros((2, 2), np.uint16), encoding="yuv422"))
    short = _image(np.zeros((2, 2), np.uint16))
    short.data = short.data[:3]
    with pytest.raises(ValueError, match="bytes"):
        image_to_array(short)
