"""A synthetic scene as a :class:`~uniseg3d_model.structures.SceneSample`, without files.

The labels follow what the ScanNet preparation plus ``ScanNetDataset`` (ScanNet20 label set)
yield for the exported files: points are the mesh vertices, ``semantic`` the ScanNet20 index of
annotated vertices (``IGNORE_INDEX`` elsewhere), instances the annotated objects of ScanNet20
thing classes in objectId order.
"""

from __future__ import annotations

import numpy as np

from uniseg3d_model.data.labels import IGNORE_INDEX, IS_THING, NYU40_TO_SCANNET20
from uniseg3d_model.structures import SceneSample
from uniseg3d_model.synthetic.scannet_export import Segmenter, segment_scene
from uniseg3d_model.synthetic.scene import SyntheticScene
from uniseg3d_model.synthetic.sentences import Referral


def scene_to_sample(scene: SyntheticScene, segments: np.ndarray | None = None,
                    referrals: list[Referral] | None = None, num_clicks: int = 0,
                    segmenter: Segmenter | None = None) -> SceneSample:
    """Build the sample of ``scene``.

    segments: (V,) segment ids (computed with :func:`segment_scene` when None), relabelled to
    superpoints 0..S-1. referrals: sentences whose targets become ``texts``/``text_instance``.
    num_clicks: one click per instance for the first ``num_clicks`` instances, at the vertex
    closest to the instance centroid.
    """
    segs = segment_scene(scene, segmenter) if segments is None else np.asarray(segments)
    if segs.shape != (scene.num_vertices,):
        raise ValueError(f"segments must have shape ({scene.num_vertices},), got {segs.shape}")
    _, superpoints = np.unique(segs, return_inverse=True)
    lut = np.full(max(41, int(scene.semantic.max()) + 1), IGNORE_INDEX, np.int64)
    for nyu, idx in NYU40_TO_SCANNET20.items():
        lut[nyu] = idx
    semantic = lut[scene.semantic]
    inst_objects = [o for o in scene.objects if o.annotated and o.scannet20 >= 0 and IS_THING[o.scannet20]]
    obj_to_inst = np.full(len(scene.objects), IGNORE_INDEX, np.int64)
    obj_to_inst[[o.object_id for o in inst_objects]] = np.arange(len(inst_objects))
    instance = obj_to_inst[scene.instance]
    points = scene.vertices.astype(np.float32)
    k = min(num_clicks, len(inst_objects))
    clicks = np.zeros((k, 3), np.float32)
    for j in range(k):  # K instances, each vectorized over its vertices
        pts = points[instance == j]
        clicks[j] = pts[np.argmin(np.linalg.norm(pts - pts.mean(0), axis=1))]
    refs = [r for r in (referrals or []) if obj_to_inst[r.object_id] >= 0]
    return SceneSample(
        points=points, colors=scene.colors.astype(np.float32) / 255.0,
        superpoints=superpoints.reshape(-1).astype(np.int64), scene_id=scene.scene_id, semantic=semantic,
        instance=instance, instance_class=np.array([o.scannet20 for o in inst_objects], np.int64),
        clicks=clicks, click_instance=np.arange(k, dtype=np.int64), texts=[r.description for r in refs],
        text_instance=np.array([obj_to_inst[r.object_id] for r in refs], np.int64),
    )
