"""Write a :class:`SyntheticScene` in ScanNet v2's raw layout.

Per scene, under ``<root>/scans/<scene_id>/``:

* ``<scene_id>_vh_clean_2.ply`` -- mesh, vertex ``x y z red green blue alpha``;
* ``<scene_id>_vh_clean_2.labels.ply`` -- same mesh with ``ushort label`` = NYU40 id;
* ``<scene_id>_vh_clean_2.0.010000.segs.json`` -- ``{"params", "sceneId", "segIndices"}``;
* ``<scene_id>.aggregation.json`` -- ``{"sceneId", "appId", "segGroups", "segmentsFile"}``;
* ``<scene_id>.txt`` -- meta data with ``axisAlignment`` (identity) and ``sceneType``.

At ``<root>/``: ``scannetv2-labels.combined.tsv`` and ``scannetv2_{train,val}.txt``.

Over-segmentation runs per object (floor, each wall, each piece of furniture), so no segment
crosses an object boundary and every object's ``segments`` cover exactly its vertices.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from uniseg3d_model.synthetic.categories import tsv_text
from uniseg3d_model.synthetic.ply import mesh_vertex_array, write_ply
from uniseg3d_model.synthetic.scene import SyntheticScene

Segmenter = Callable[[np.ndarray, np.ndarray], np.ndarray]
SEG_PARAMS = {"kThresh": "0.01", "segMinVerts": "20"}
SCENE_TYPES = {"bedroom": "Bedroom / Hotel", "living room": "Living room / Lounge", "office": "Office",
               "kitchen": "Kitchen", "bathroom": "Bathroom"}


def _default_segmenter(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    from uniseg3d_model.superpoints import segment_mesh

    return segment_mesh(vertices, faces, k_thresh=0.01, min_verts=20)


def segment_scene(scene: SyntheticScene, segmenter: Segmenter | None = None) -> np.ndarray:
    """(V,) int64 segment id per vertex, segmenting each object's sub-mesh separately.

    Ids are contiguous, numbered object by object (objectId order).
    """
    seg_fn = segmenter or _default_segmenter
    out = np.full(scene.num_vertices, -1, dtype=np.int64)
    faces = scene.faces.astype(np.int64)
    face_obj = scene.instance[faces[:, 0]]
    if np.any(scene.instance[faces[:, 1]] != face_obj) or np.any(scene.instance[faces[:, 2]] != face_obj):
        raise ValueError(f"scene {scene.scene_id}: a face spans two objects")
    order = np.argsort(face_obj, kind="stable")
    bounds = np.searchsorted(face_obj[order], [o.object_id for o in scene.objects] + [np.iinfo(np.int64).max])
    next_id = 0
    for i, obj in enumerate(scene.objects):
        vids = np.flatnonzero(scene.instance == obj.object_id)
        remap = np.full(scene.num_vertices, -1, dtype=np.int64)
        remap[vids] = np.arange(len(vids))
        obj_faces = remap[faces[order[bounds[i]:bounds[i + 1]]]]
        local = np.asarray(seg_fn(scene.vertices[vids].astype(np.float64), obj_faces), dtype=np.int64)
        if local.shape != (len(vids),):
            raise ValueError(f"segmenter returned shape {local.shape}, expected ({len(vids)},)")
        _, dense = np.unique(local, return_inverse=True)
        out[vids] = dense.reshape(-1) + next_id
        next_id += int(dense.max()) + 1 if len(vids) else 0
    if np.any(out < 0):
        raise ValueError(f"scene {scene.scene_id}: {int((out < 0).sum())} vertices belong to no object")
    return out


def _label_colors(nyu40: np.ndarray) -> np.ndarray:
    """A fixed colour per NYU40 id for the labels mesh (visualisation only)."""
    ids = np.arange(41)
    table = np.stack([(ids * 67) % 256, (ids * 131 + 50) % 256, (ids * 199 + 100) % 256], 1).astype(np.uint8)
    table[0] = 0
    return table[np.clip(nyu40, 0, 40)]


def export_scene(scene: SyntheticScene, root: str | Path, segments: np.ndarray | None = None,
                 segmenter: Segmenter | None = None) -> Path:
    """Write ``scene`` under ``<root>/scans/<scene_id>/``; returns that directory.

    segments: optional precomputed (V,) segment ids (must not cross objects); computed with
    :func:`segment_scene` otherwise.
    """
    sid = scene.scene_id
    out = Path(root) / "scans" / sid
    out.mkdir(parents=True, exist_ok=True)
    segs = segment_scene(scene, segmenter) if segments is None else np.asarray(segments, dtype=np.int64)
    if segs.shape != (scene.num_vertices,):
        raise ValueError(f"segments must have shape ({scene.num_vertices},), got {segs.shape}")
    write_ply(out / f"{sid}_vh_clean_2.ply", mesh_vertex_array(scene.vertices, scene.colors), scene.faces,
              comment="uniseg3d synthetic scene")
    write_ply(out / f"{sid}_vh_clean_2.labels.ply",
              mesh_vertex_array(scene.vertices, _label_colors(scene.semantic), scene.semantic), scene.faces,
              comment="uniseg3d synthetic labels")
    segs_name = f"{sid}_vh_clean_2.0.010000.segs.json"
    (out / segs_name).write_text(json.dumps({"params": SEG_PARAMS, "sceneId": sid,
                                             "segIndices": segs.tolist()}))
    groups = []
    for obj in scene.objects:
        if not obj.annotated:  # an annotation gap: segments exist, no segGroup names them
            continue
        seg_ids = np.unique(segs[scene.instance == obj.object_id])
        shared = np.isin(segs[scene.instance != obj.object_id], seg_ids)
        if np.any(shared):
            raise ValueError(f"scene {sid}: segments of object {obj.object_id} also cover other objects")
        groups.append({"id": obj.object_id, "objectId": obj.object_id, "segments": seg_ids.tolist(),
                       "label": obj.raw_category})
    (out / f"{sid}.aggregation.json").write_text(json.dumps({
        "sceneId": f"scannet.{sid}", "appId": "Aggregator.v2", "segGroups": groups,
        "segmentsFile": f"scannet.{segs_name}",
    }))
    (out / f"{sid}.txt").write_text(
        "axisAlignment = 1 0 0 0 0 1 0 0 0 0 1 0 0 0 0 1\n"
        f"sceneType = {SCENE_TYPES.get(scene.room_type, scene.room_type)}\n"
    )
    return out


def write_label_map(root: str | Path, counts: dict[str, int] | None = None) -> Path:
    """Write ``<root>/scannetv2-labels.combined.tsv`` covering the synthetic raw categories."""
    path = Path(root) / "scannetv2-labels.combined.tsv"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(tsv_text(counts))
    return path


def write_splits(root: str | Path, train: Iterable[str], val: Iterable[str]) -> None:
    """Write ``scannetv2_train.txt`` and ``scannetv2_val.txt`` (one scene id per line)."""
    for name, ids in (("train", train), ("val", val)):
        ids = list(ids)
        (Path(root) / f"scannetv2_{name}.txt").write_text("".join(f"{i}\n" for i in ids))
