"""The figure renderer: projection geometry, z-buffering and a PNG that decodes."""

import zlib

import numpy as np
import pytest

from uniseg3d_ros.tools.render import (
    look_at,
    project_perspective,
    project_top_down,
    render_perspective,
    render_top_down,
    side_by_side,
    write_png,
)


def _read_png(path):
    """Minimal decoder for the 8-bit RGB, filter-0 PNGs write_png produces."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, width, height = 8, b"", 0, 0
    while pos < len(data):
        length = int.from_bytes(data[pos : pos + 4], "big")
        tag = data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + length]
        crc = int.from_bytes(data[pos + 8 + length : pos + 12 + length], "big")
        assert crc == zlib.crc32(tag + body) & 0xFFFFFFFF
        if tag == b"IHDR":
            width, height = int.from_bytes(body[:4], "big"), int.from_bytes(body[4:8], "big")
        elif tag == b"IDAT":
            idat += body
        pos += 12 + length
    raw = np.frombuffer(zlib.decompress(idat), np.uint8).reshape(height, 1 + width * 3)
    assert np.all(raw[:, 0] == 0)
    return raw[:, 1:].reshape(height, width, 3)


def test_png_round_trip(tmp_path):
    image = np.random.default_rng(0).integers(0, 256, (17, 23, 3), dtype=np.uint8)
    path = write_png(tmp_path / "sub" / "x.png", image)
    np.testing.assert_array_equal(_read_png(path), image)


def test_png_rejects_wrong_shape(tmp_path):
    with pytest.raises(ValueError, match="image must be"):
        write_png(tmp_path / "x.png", np.zeros((4, 4), np.uint8))


def test_top_down_keeps_the_highest_point_and_orients_y_up():
    points = np.array([[0.0, 0.0, 0.0], [0.0, 0.0, 1.0], [1.0, 1.0, 0.0]])
    colors = np.array([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0]])
    image = render_top_down(points, colors, size=21, radius=0)
    assert tuple(image[20, 0]) == (0, 255, 0)  # origin at bottom-left, higher (green) point wins
    assert tuple(image[0, 20]) == (0, 0, 255)  # (1, 1) at top-right
    assert tuple(image[10, 10]) == (255, 255, 255)


def test_perspective_projects_the_look_at_target_to_the_centre():
    pose = look_at(np.array([0.0, -3.0, 0.0]), np.array([0.0, 0.0, 0.0]))
    points = np.array([[0.0, 0.0, 0.0], [0.0, 5.0, 0.0], [0.0, -5.0, 0.0]])  # last one is behind
    colors = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255]], np.uint8)
    image = render_perspective(points, colors, pose, width=41, height=31, radius=0)
    assert tuple(image[15, 20]) == (255, 0, 0)  # the nearer red point occludes green
    assert not np.any(np.all(image == (0, 0, 255), axis=-1))


def test_side_by_side_pads_to_the_tallest_image():
    out = side_by_side(np.zeros((4, 3, 3), np.uint8), np.zeros((6, 2, 3), np.uint8), gap=1)
    assert out.shape == (6, 6, 3)


def test_projections_give_the_pixels_the_renders_draw():
    rng = np.random.default_rng(0)
    points = rng.uniform(-1, 1, (50, 3)) + np.array([0.0, 0.0, 0.0])
    colors = np.zeros((50, 3), np.uint8)
    colors[7] = (255, 0, 0)
    bounds = (points.min(0), points.max(0))
    u, v = project_top_down(points, 64, 0, bounds)
    only = render_top_down(points[7:8], colors[7:8], size=64, radius=0, bounds=bounds)
    assert tuple(only[v[7], u[7]]) == (255, 0, 0)
    pose = look_at(np.array([0.0, -4.0, 1.0]), np.zeros(3))
    u, v, depth = project_perspective(points, pose, 80, 60)
    assert (depth > 0).all()
    only = render_perspective(points[7:8], colors[7:8], pose, width=80, height=60, radius=0)
    assert tuple(only[v[7], u[7]]) == (255, 0, 0)
    _, _, behind = project_perspective(np.array([[0.0, -8.0, 1.0]]), pose, 80, 60)
    assert behind[0] < 0
