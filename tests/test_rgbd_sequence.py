"""RGB-D sequence directories (ScanNet exported-sensor layout): write, read back exactly, errors."""

from __future__ import annotations

import json

import numpy as np
import open3d as o3d
import pytest

from uniseg3d_model.data.rgbd_sequence import RGBDFrame, RGBDSequence, write_sequence

K = np.array([[100.0, 0.0, 31.5], [0.0, 100.0, 23.5], [0.0, 0.0, 1.0]])


def _frames(n: int = 3) -> list[RGBDFrame]:
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        depth = rng.integers(0, 65535, size=(48, 64), dtype=np.uint16)
        color = rng.integers(0, 256, size=(48, 64, 3), dtype=np.uint8)
        pose = np.eye(4)
        pose[:3, 3] = [0.1 * i, 0.2, 1.3]
        pose[:3, :3] = o3d.geometry.get_rotation_matrix_from_xyz([0.1 * i, 0.3, -0.2])
        out.append(RGBDFrame(stamp=0.25 * i + 1e9, depth=depth, color=color, K=K, pose=pose))
    return out


def test_round_trip_is_exact(tmp_path):
    frames = _frames()
    write_sequence(tmp_path / "seq", frames, fps=4.0)
    seq = RGBDSequence(tmp_path / "seq")
    assert len(seq) == 3 and seq.fps == 4.0 and seq.depth_scale == 1000.0
    for a, b in zip(frames, seq):
        assert b.depth.dtype == np.uint16 and np.array_equal(a.depth, b.depth)
        assert b.color.dtype == np.uint8 and np.array_equal(a.color, b.color)
        assert np.array_equal(a.pose, b.pose) and np.array_equal(a.K, b.K)
        assert b.stamp == a.stamp


def test_layout_matches_scannet_export(tmp_path):
    write_sequence(tmp_path / "seq", _frames(2), fps=30.0)
    root = tmp_path / "seq"
    for rel in ("color/000001.png", "depth/000001.png", "pose/000001.txt", "intrinsic/intrinsic_depth.txt",
                "intrinsic/intrinsic_color.txt", "intrinsic/extrinsic_depth.txt"):
        assert (root / rel).is_file(), rel
    assert np.loadtxt(root / "intrinsic/intrinsic_depth.txt").shape == (4, 4)
    meta = json.loads((root / "sequence.json").read_text())
    assert (meta["width"], meta["height"], meta["num_frames"]) == (64, 48, 2)


def test_reads_scannet_sensreader_export_without_metadata(tmp_path):
    """SensReader output: unpadded names, jpg colour at another size, -inf pose for lost tracking."""
    root = tmp_path / "scene"
    for sub in ("color", "depth", "pose", "intrinsic"):
        (root / sub).mkdir(parents=True)
    K4 = np.eye(4)
    K4[:3, :3] = K
    np.savetxt(root / "intrinsic/intrinsic_depth.txt", K4)
    depth = np.full((48, 64), 1500, np.uint16)
    color = np.zeros((96, 128, 3), np.uint8)
    color[:, :64] = 200
    for i in range(3):
        o3d.io.write_image(str(root / f"depth/{i}.png"), o3d.geometry.Image(depth))
        o3d.io.write_image(str(root / f"color/{i}.png"), o3d.geometry.Image(color))
        np.savetxt(root / f"pose/{i}.txt", np.full((4, 4), -np.inf) if i == 1 else np.eye(4))
    seq = RGBDSequence(root)
    assert seq.frame_ids == [0, 2] and len(RGBDSequence(root, skip_invalid_poses=False)) == 3
    f = seq[1]
    assert f.stamp == pytest.approx(2 / 30.0)
    assert f.color.shape == (48, 64, 3) and f.color[0, 0, 0] == 200 and f.color[0, 63, 0] == 0


def test_bad_inputs_raise_clear_errors(tmp_path):
    frames = _frames(2)
    with pytest.raises(ValueError, match="depth must be"):
        bad = RGBDFrame(0.0, frames[0].depth.astype(np.float32), None, K, np.eye(4))
        write_sequence(tmp_path / "a", [bad])
    with pytest.raises(ValueError, match="pose must be"):
        write_sequence(tmp_path / "b", [RGBDFrame(0.0, frames[0].depth, None, K, np.eye(3))])
    with pytest.raises(ValueError, match="at least one frame"):
        write_sequence(tmp_path / "c", [])
    with pytest.raises(FileNotFoundError, match="no depth/"):
        RGBDSequence(tmp_path / "missing")
    write_sequence(tmp_path / "d", frames)
    meta = json.loads((tmp_path / "d/sequence.json").read_text())
    meta["stamps"] = [0.0]
    (tmp_path / "d/sequence.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="stamps"):
        RGBDSequence(tmp_path / "d")
