"""Generated rooms as the node sees them: rendered to RGB-D, fused by :class:`SceneMap` exactly as
``uniseg3d_node`` fuses a camera stream, superpoints from the node's ``segment_points`` call, and
labels transferred from the room's mesh. The training / evaluation data of the node's own domain.

Per frame, like the node (``node.py``: ``_integrate_rgbd`` -> ``_place`` -> ``_integrate``):
``depth_to_points(depth uint16 mm, color, K, min_depth, max_depth, stride)`` in the camera optical
frame, then ``SceneMap.integrate(points, colors, pose camera->map, stamp)``; the map has the node's
``voxel_size`` / ``max_voxels`` / ``max_range`` (defaults from :class:`NodeParams`). The rendered
depth has no noise model (the node adds none either). Superpoints: ``segment_points(points, colors,
**EngineConfig().superpoint_kwargs)``, the engine's settings. Labels:
:func:`uniseg3d_ros.tools.demo.scene.transfer_labels`
(nearest mesh vertex within ``transfer_radius``), written in the processed-sample format of
:mod:`uniseg3d_model.data.scannet` (``PROCESSED_KEYS``), so ``ScanNetDataset`` reads them unchanged.

Frames: everything in the map frame (REP 105, z up, metres), the frame the generator builds the
room in.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from uniseg3d_model.data.labels import (
    IGNORE_INDEX,
    IS_THING,
    SCANNET200_ID_TO_INDEX,
    SCANNET200_IS_THING,
)
from uniseg3d_model.synthetic.categories import RAW_CATEGORIES
from uniseg3d_model.synthetic.scene import SyntheticScene
from uniseg3d_ros.inference.engine import EngineConfig
from uniseg3d_ros.node.params import NodeParams

_NODE = NodeParams()


@dataclass
class FuseConfig:
    """How a room is recorded and fused. Camera: ``frames`` along the generator's loop at
    ``width`` x ``height`` (the demo's defaults); map and back-projection: the node's defaults."""

    frames: int = 48
    width: int = 320
    height: int = 240
    voxel_size: float = _NODE.voxel_size
    max_voxels: int = _NODE.max_voxels
    max_range: float = _NODE.max_range  # 0 = unlimited (the node's convention)
    min_depth: float = _NODE.min_depth
    max_depth: float = _NODE.max_depth
    depth_stride: int = _NODE.depth_stride
    transfer_radius: float = 0.1  # metres from a map point to its mesh vertex for a label
    # the engine's settings (the node calls segment_points with exactly these)
    superpoint_kwargs: dict[str, Any] = field(
        default_factory=lambda: dict(EngineConfig().superpoint_kwargs)
    )


def fuse_room(scene: SyntheticScene, cfg: FuseConfig | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Render ``scene`` and fuse the frames like the node. Returns the map's points (N, 3) float32
    metres and colors (N, 3) float32 [0, 1], in the snapshot's order."""
    from uniseg3d_model.synthetic.render import CameraConfig, render_sequence
    from uniseg3d_ros.mapping.rgbd import depth_to_points
    from uniseg3d_ros.mapping.scene_map import SceneMap

    cfg = cfg or FuseConfig()
    cam = CameraConfig(width=cfg.width, height=cfg.height)
    smap = SceneMap(
        voxel_size=cfg.voxel_size,
        max_voxels=cfg.max_voxels,
        max_range=cfg.max_range if cfg.max_range > 0 else None,
    )
    for fr in render_sequence(scene, cfg.frames, cam):
        pts, cols = depth_to_points(
            fr.depth, fr.color, fr.K,
            min_depth=cfg.min_depth, max_depth=cfg.max_depth, stride=cfg.depth_stride,
        )
        if cols is None:
            cols = np.full(pts.shape, 0.5, np.float32)
        smap.integrate(pts, cols, fr.pose, stamp=fr.stamp)
    snap = smap.snapshot()
    return np.array(snap.points, np.float32), np.array(snap.colors, np.float32)


def fused_sample(scene: SyntheticScene, cfg: FuseConfig | None = None) -> dict[str, np.ndarray]:
    """The processed sample (``uniseg3d_model.data.scannet.PROCESSED_KEYS``) of ``scene`` as the
    node fuses it: N map points, their superpoints, ScanNet20 / ScanNet200 semantics and the
    instances (every annotated object but wall / floor that has map points, in objectId order)."""
    from uniseg3d_model.superpoints import segment_points
    from uniseg3d_ros.tools.demo.scene import transfer_labels

    cfg = cfg or FuseConfig()
    points, colors = fuse_room(scene, cfg)
    superpoints = np.asarray(segment_points(points, colors, **cfg.superpoint_kwargs), np.int64)
    truth = transfer_labels(scene, points, cfg.transfer_radius)
    semantic20 = np.where(truth.semantic >= 0, truth.semantic, IGNORE_INDEX).astype(np.int64)
    annotated = {o.object_id: o for o in scene.objects if o.annotated}
    obj_cls200 = {oid: _scannet200_index(o.raw_category) for oid, o in annotated.items()}
    semantic200 = np.full(len(points), IGNORE_INDEX, np.int64)
    instance = np.full(len(points), IGNORE_INDEX, np.int64)
    inst_cls20, inst_cls200, inst_oid = [], [], []
    present = set(np.unique(truth.object_id[truth.object_id >= 0]).tolist())
    for oid in sorted(annotated):
        o, mask = annotated[oid], truth.object_id == oid
        semantic200[mask] = obj_cls200[oid]
        stuff200 = obj_cls200[oid] >= 0 and not SCANNET200_IS_THING[obj_cls200[oid]]
        if oid not in present or o.raw_category in ("wall", "floor") or stuff200:
            continue
        instance[mask] = len(inst_oid)
        inst_cls20.append(o.scannet20 if o.scannet20 >= 0 and IS_THING[o.scannet20] else IGNORE_INDEX)
        inst_cls200.append(obj_cls200[oid])
        inst_oid.append(oid)
    return {
        "points": points,
        "colors": colors,
        "superpoints": superpoints,
        "semantic20": semantic20,
        "semantic200": semantic200,
        "instance": instance,
        "instance_class": np.array(inst_cls20, np.int64),
        "instance_class200": np.array(inst_cls200, np.int64),
        "instance_object_id": np.array(inst_oid, np.int64),
    }


def _scannet200_index(raw_category: str) -> int:
    cat = RAW_CATEGORIES.get(raw_category)
    return int(SCANNET200_ID_TO_INDEX.get(cat.scannet_id, IGNORE_INDEX)) if cat is not None else IGNORE_INDEX
