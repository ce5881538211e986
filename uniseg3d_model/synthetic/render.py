"""RGB-D rendering of a synthetic scene along a camera loop, by ray casting.

Frames follow ROS conventions: poses are camera optical frame -> map (REP 103 optical frame:
z forward, x right, y down; map: REP 105, z up). Depth is the distance along the optical axis
in millimetres (uint16, 0 = no hit or beyond ``max_depth``); colour is RGB8 interpolated from
the hit triangle's vertex colours with the barycentric coordinates of the hit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import open3d as o3d

from uniseg3d_model.data.rgbd_sequence import RGBDFrame
from uniseg3d_model.synthetic.scene import SyntheticScene


@dataclass(frozen=True)
class CameraConfig:
    width: int = 320
    height: int = 240
    focal_scale: float = 0.903  # fx = fy = focal_scale * width (ScanNet depth: 577.9 px at 640)
    eye_height: float = 1.35  # metres above the floor
    pitch_deg: float = -25.0  # negative looks down
    radius_frac: float = 0.3  # loop radius as a fraction of the shorter room side
    max_depth: float = 8.0  # metres; farther hits are written as 0
    fps: float = 5.0  # frame rate used for the stamps

    def __post_init__(self) -> None:
        if self.width < 8 or self.height < 8:
            raise ValueError(f"width and height must be >= 8 pixels, got {self.width}x{self.height}")
        if not 0.0 < self.max_depth <= 65.0:
            raise ValueError(f"max_depth must be in (0, 65] metres (uint16 mm), got {self.max_depth}")
        if self.fps <= 0:
            raise ValueError(f"fps must be > 0, got {self.fps}")

    def intrinsics(self) -> np.ndarray:
        """(3, 3) pinhole matrix K; pixel (u, v) sees direction ((u - cx) / fx, (v - cy) / fy, 1)."""
        f = self.focal_scale * self.width
        return np.array([[f, 0.0, (self.width - 1) / 2], [0.0, f, (self.height - 1) / 2], [0.0, 0.0, 1.0]])


def look_pose(eye: np.ndarray, yaw: float, pitch: float) -> np.ndarray:
    """(4, 4) camera optical frame -> map for a camera at ``eye`` looking along yaw/pitch (radians)."""
    forward = np.array([math.cos(pitch) * math.cos(yaw), math.cos(pitch) * math.sin(yaw), math.sin(pitch)])
    right = np.cross(forward, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    pose = np.eye(4)
    pose[:3, :3] = np.stack([right, down, forward], axis=1)
    pose[:3, 3] = eye
    return pose


def camera_loop(scene: SyntheticScene, num_frames: int, cfg: CameraConfig = CameraConfig()) -> np.ndarray:
    """(num_frames, 4, 4) poses on a circle around the room centre, each looking across the room.

    The radius shrinks until no camera position lies within 0.3 m of a furniture box.
    """
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    room = scene.room
    center = np.array([room.length / 2, room.width / 2])
    boxes = [o.box.grown(0.3) for o in scene.objects if o.raw_category not in ("wall", "floor")]
    phis = 2 * math.pi * np.arange(num_frames) / num_frames
    radius = cfg.radius_frac * min(room.length, room.width)
    eyes = None
    for _ in range(8):
        eyes = np.column_stack([center + radius * np.stack([np.cos(phis), np.sin(phis)], 1),
                                np.full(num_frames, cfg.eye_height)])
        if not any(np.any(b.contains(eyes)) for b in boxes):
            break
        radius *= 0.6
    pitch = math.radians(cfg.pitch_deg)
    return np.stack([look_pose(e, float(p) + math.pi, pitch) for e, p in zip(eyes, phis)])


class Renderer:
    """Casts pinhole rays against one scene's mesh."""

    def __init__(self, scene: SyntheticScene) -> None:
        self.scene = scene
        self._rays = o3d.t.geometry.RaycastingScene()
        self._rays.add_triangles(np.ascontiguousarray(scene.vertices, dtype=np.float32),
                                 np.ascontiguousarray(scene.faces, dtype=np.uint32))
        self._faces = scene.faces.astype(np.int64)
        self._colors = scene.colors.astype(np.float32)

    def render(self, pose: np.ndarray, K: np.ndarray, width: int, height: int,
               max_depth: float = 8.0) -> tuple[np.ndarray, np.ndarray]:
        """Render one view: ``(depth (H, W) uint16 mm, color (H, W, 3) uint8 RGB)``.

        pose: (4, 4) camera optical frame -> map; K: (3, 3) intrinsics.
        """
        u, v = np.meshgrid(np.arange(width, dtype=np.float64), np.arange(height, dtype=np.float64))
        d_cam = np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones_like(u)], -1)
        d_map = d_cam @ pose[:3, :3].T  # optical z component stays 1 in the camera frame
        origins = np.broadcast_to(pose[:3, 3], d_map.shape)
        rays = np.concatenate([origins, d_map], -1).astype(np.float32)
        hit = self._rays.cast_rays(o3d.core.Tensor(rays))
        t = hit["t_hit"].numpy()  # in units of |d|, i.e. optical-axis depth in metres
        valid = np.isfinite(t) & (t <= max_depth)
        depth = np.where(valid, np.round(t * 1000.0), 0).astype(np.uint16)
        prim = hit["primitive_ids"].numpy().astype(np.int64)
        uv = hit["primitive_uvs"].numpy()
        tri = self._faces[np.where(valid, prim, 0)]  # (H, W, 3)
        w = np.stack([1.0 - uv[..., 0] - uv[..., 1], uv[..., 0], uv[..., 1]], -1)[..., None]
        rgb = (self._colors[tri] * w).sum(-2)
        color = np.where(valid[..., None], np.clip(np.round(rgb), 0, 255), 0).astype(np.uint8)
        return depth, color


def render_sequence(scene: SyntheticScene, num_frames: int,
                    cfg: CameraConfig = CameraConfig()) -> list[RGBDFrame]:
    """Render ``num_frames`` RGB-D frames along :func:`camera_loop` (stamps ``i / fps`` seconds)."""
    renderer = Renderer(scene)
    K = cfg.intrinsics()
    frames = []
    for i, pose in enumerate(camera_loop(scene, num_frames, cfg)):
        depth, color = renderer.render(pose, K, cfg.width, cfg.height, cfg.max_depth)
        frames.append(RGBDFrame(stamp=i / cfg.fps, depth=depth, color=color, K=K.copy(), pose=pose))
    return frames
