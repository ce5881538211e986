"""Recorded RGB-D sequences on disk, in ScanNet's exported-sensor layout.

A sequence directory holds::

    color/000000.png           RGB8 (any size; resized to the depth size when it differs)
    depth/000000.png           uint16, ``depth_scale`` units per metre (1000 = millimetres), 0 = invalid
    pose/000000.txt            4x4 camera optical frame -> map (REP 103 / REP 105), row-major text
    intrinsic/intrinsic_depth.txt   4x4 (K in the upper-left 3x3)
    sequence.json              {"width", "height", "fps", "depth_scale", "stamps", ...}

This is what ScanNet's ``SensReader`` exports (plus ``sequence.json``); a ScanNet export without
``sequence.json`` is read too (stamps from ``fps``, default 30). Poses with non-finite entries
(ScanNet marks lost tracking with ``-inf``) are skipped by default.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import open3d as o3d

FORMAT_NAME = "uniseg3d-rgbd-sequence"


@dataclass
class RGBDFrame:
    stamp: float  # seconds
    depth: np.ndarray  # (H, W) uint16, depth_scale units per metre; 0 = invalid
    color: np.ndarray | None  # (H, W, 3) uint8 RGB, or None
    K: np.ndarray  # (3, 3) float64 intrinsics of the depth image
    pose: np.ndarray  # (4, 4) float64 camera optical frame -> map
    depth_scale: float = 1000.0


def _write_png(path: Path, image: np.ndarray) -> None:
    if not o3d.io.write_image(str(path), o3d.geometry.Image(np.ascontiguousarray(image))):
        raise OSError(f"could not write {path}")


def _read_png(path: Path) -> np.ndarray:
    if not path.is_file():
        raise FileNotFoundError(f"missing image {path}")
    return np.asarray(o3d.io.read_image(str(path)))


def _matrix_text(m: np.ndarray) -> str:
    return "".join(" ".join(repr(float(x)) for x in row) + "\n" for row in m)


def write_sequence(path: str | Path, frames: Iterable[RGBDFrame], fps: float = 30.0,
                   extra: dict | None = None) -> Path:
    """Write frames as a sequence directory; all frames must share K, size and depth_scale."""
    root = Path(path)
    for sub in ("color", "depth", "pose", "intrinsic"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    stamps, first = [], None
    for i, fr in enumerate(frames):
        depth = np.asarray(fr.depth)
        if depth.dtype != np.uint16 or depth.ndim != 2:
            raise ValueError(f"frame {i}: depth must be (H, W) uint16, got {depth.dtype} {depth.shape}")
        if fr.color is not None and (fr.color.dtype != np.uint8 or fr.color.shape != depth.shape + (3,)):
            raise ValueError(f"frame {i}: color must be {depth.shape + (3,)} uint8, got "
                             f"{fr.color.dtype} {fr.color.shape}")
        pose, K = np.asarray(fr.pose, dtype=np.float64), np.asarray(fr.K, dtype=np.float64)
        if pose.shape != (4, 4) or K.shape != (3, 3):
            raise ValueError(f"frame {i}: pose must be (4, 4) and K (3, 3), got {pose.shape}, {K.shape}")
        if first is None:
            first = (K, depth.shape, fr.depth_scale)
            K4 = np.eye(4)
            K4[:3, :3] = K
            for name in ("intrinsic_depth.txt", "intrinsic_color.txt"):
                (root / "intrinsic" / name).write_text(_matrix_text(K4))
            for name in ("extrinsic_depth.txt", "extrinsic_color.txt"):
                (root / "intrinsic" / name).write_text(_matrix_text(np.eye(4)))
        elif not (np.allclose(K, first[0]) and depth.shape == first[1] and fr.depth_scale == first[2]):
            raise ValueError(f"frame {i}: K, image size and depth_scale must match frame 0")
        _write_png(root / "depth" / f"{i:06d}.png", depth)
        if fr.color is not None:
            _write_png(root / "color" / f"{i:06d}.png", fr.color)
        (root / "pose" / f"{i:06d}.txt").write_text(_matrix_text(pose))
        stamps.append(float(fr.stamp))
    if first is None:
        raise ValueError("write_sequence needs at least one frame")
    meta = {"format": FORMAT_NAME, "version": 1, "width": int(first[1][1]), "height": int(first[1][0]),
            "fps": float(fps), "depth_scale": float(first[2]), "num_frames": len(stamps), "stamps": stamps,
            "pose_convention": "camera optical frame (z forward, x right, y down) -> map",
            **(extra or {})}
    (root / "sequence.json").write_text(json.dumps(meta, indent=1))
    return root


class RGBDSequence:
    """Read a sequence directory; ``len()``, indexing and iteration give :class:`RGBDFrame`."""

    def __init__(self, path: str | Path, skip_invalid_poses: bool = True) -> None:
        self.path = Path(path)
        if not (self.path / "depth").is_dir():
            raise FileNotFoundError(f"{self.path}: not an RGB-D sequence (no depth/ directory)")
        meta_path = self.path / "sequence.json"
        self.meta: dict = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
        self.fps = float(self.meta.get("fps", 30.0))
        self.depth_scale = float(self.meta.get("depth_scale", 1000.0))
        if self.fps <= 0 or self.depth_scale <= 0:
            raise ValueError(f"{meta_path}: fps and depth_scale must be > 0, got {self.fps}, "
                             f"{self.depth_scale}")
        k_path = self.path / "intrinsic" / "intrinsic_depth.txt"
        if not k_path.is_file():
            raise FileNotFoundError(f"{self.path}: missing intrinsic/intrinsic_depth.txt")
        K4 = np.loadtxt(k_path, dtype=np.float64).reshape(-1)
        if K4.size not in (9, 16):
            raise ValueError(f"{k_path}: expected a 4x4 or 3x3 matrix, got {K4.size} numbers")
        self.K = K4.reshape(4, 4)[:3, :3] if K4.size == 16 else K4.reshape(3, 3)
        ids = sorted(int(p.stem) for p in (self.path / "depth").glob("*.png") if p.stem.isdigit())
        stamps = self.meta.get("stamps")
        if stamps is not None and len(stamps) != len(ids):
            raise ValueError(f"{meta_path}: {len(stamps)} stamps for {len(ids)} depth images")
        self._stamps = {i: float(stamps[k]) if stamps is not None else i / self.fps
                        for k, i in enumerate(ids)}
        self._poses = {i: self._read_pose(i) for i in ids}
        self.frame_ids = [i for i in ids if not skip_invalid_poses or np.all(np.isfinite(self._poses[i]))]

    def _read_pose(self, i: int) -> np.ndarray:
        p = self.path / "pose" / f"{i:06d}.txt"
        if not p.is_file():
            p = self.path / "pose" / f"{i}.txt"  # SensReader names files without zero padding
        if not p.is_file():
            raise FileNotFoundError(f"{self.path}: missing pose for frame {i}")
        pose = np.loadtxt(p, dtype=np.float64)
        if pose.shape != (4, 4):
            raise ValueError(f"{p}: pose must be a 4x4 matrix, got shape {pose.shape}")
        return pose

    def __len__(self) -> int:
        return len(self.frame_ids)

    def __getitem__(self, index: int) -> RGBDFrame:
        i = self.frame_ids[index]
        depth = _read_png(self._image(self.path / "depth", i))
        if depth.dtype != np.uint16 or depth.ndim != 2:
            raise ValueError(f"{self.path}: depth {i} must be 16-bit single channel, got "
                             f"{depth.dtype} {depth.shape}")
        color = None
        cpath = self._image(self.path / "color", i, required=False)
        if cpath is not None:
            color = _read_png(cpath)[..., :3]
            if color.shape[:2] != depth.shape:  # ScanNet colour is 1296x968: nearest-neighbour resize
                rows = (np.arange(depth.shape[0]) * color.shape[0] // depth.shape[0])
                cols = (np.arange(depth.shape[1]) * color.shape[1] // depth.shape[1])
                color = color[rows][:, cols]
            color = np.ascontiguousarray(color, dtype=np.uint8)
        pose = self._poses[i].copy()
        return RGBDFrame(self._stamps[i], depth, color, self.K.copy(), pose, self.depth_scale)

    @staticmethod
    def _image(folder: Path, i: int, required: bool = True) -> Path | None:
        for name in (f"{i:06d}.png", f"{i}.png", f"{i:06d}.jpg", f"{i}.jpg"):
            if (folder / name).is_file():
                return folder / name
        if required:
            raise FileNotFoundError(f"missing image {folder}/{i:06d}.png")
        return None

    def __iter__(self) -> Iterator[RGBDFrame]:
        for k in range(len(self)):
            yield self[k]
