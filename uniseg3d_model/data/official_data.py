"""Read the official UniSeg3D prepared data directly (no mmdet3d, no mmengine).

Layout (the official README, "Dataset"; config ``data_prefix``)::

    <root>/uniseg3d_infos_train.pkl, uniseg3d_infos_val.pkl   mmdet3d v2 info files
    <root>/points/<scene>.bin         float32 (N, num_pts_feats=6): x y z r g b (rgb 0..255)
    <root>/instance_mask/<scene>.bin  int64 (N,): aggregation objectId + 1, 0 = no object
    <root>/semantic_mask/<scene>.bin  int64 (N,): NYU40 id, 0 = unannotated
    <root>/super_points/<scene>.bin   int64 (N,): superpoint id (segmentator on the mesh)
    <root>/scannet_cls_embedding.pth  (K, P, D) float class-name prototypes (decoder classifier)

Info file: ``{"metainfo": {...}, "data_list": [info, ...]}`` (a bare list is accepted too);
keys read per ``info`` (tools/update_infos_to_v2.py, scannet_dataset.py, loading.py,
transforms_3d.py at c272954):

- ``lidar_points.lidar_path`` / ``lidar_points.num_pts_feats``, ``pts_instance_mask_path``,
  ``pts_semantic_mask_path``, ``super_pts_path``: file names under the folders above;
- ``text_info``: ``{str(objectId): {"text": [sentence, ...], "text_token": [77 CLIP token ids
  per sentence], "label_id": int, "pts_id": point indices}}`` (ScanRefer, ScanNet20 objects);
- ``sam3d_pseudo_sp_masks`` (train only): (M, S) bool SAM3D pseudo masks over superpoints.

Pickles can run code, so :func:`load_infos` uses :class:`RestrictedUnpickler`, which builds
only plain containers, numpy arrays/scalars and torch tensors (storages re-read with
``torch.load(weights_only=True)``); anything else is refused naming the global.

Labels follow the official pipeline: ``PointSegClassMapping`` (NYU40 -> ScanNet20, else
ignore) and ``AddSuperPointAnnotations`` (an instance = an object id over points whose class
is a ScanNet20 thing, in ascending object id; its class = its first point's class).
:class:`OfficialScanNetDataset` then samples through :func:`.dataset.make_sample`, exactly as
:class:`.dataset.ScanNetDataset` does for our own preparation.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch

from uniseg3d_model.data.augment import AugmentConfig
from uniseg3d_model.data.dataset import PromptedScenes
from uniseg3d_model.data.labels import IGNORE_INDEX, IS_THING, NYU40_TO_SCANNET20

INFO_FILE = "uniseg3d_infos_{split}.pkl"
FOLDERS = {"points": "points", "instance": "instance_mask", "semantic": "semantic_mask",
           "superpoints": "super_points"}
CLASS_EMBEDDING_FILE = "scannet_cls_embedding.pth"


def _storage_from_bytes(data: bytes) -> Any:
    return torch.load(io.BytesIO(data), weights_only=True)


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler for info files: numpy arrays/scalars, torch tensors and plain containers only."""

    _ALLOWED: dict[tuple[str, str], Any] = {
        ("collections", "OrderedDict"): __import__("collections").OrderedDict,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
        ("torch.storage", "_load_from_bytes"): _storage_from_bytes,
    }

    def find_class(self, module: str, name: str) -> Any:
        numpy_core = module in ("numpy.core.multiarray", "numpy._core.multiarray")
        if numpy_core and name in ("_reconstruct", "scalar"):
            return getattr((getattr(np, "_core", None) or np.core).multiarray, name)
        key = (module, name)
        if key in self._ALLOWED:
            return self._ALLOWED[key]
        raise pickle.UnpicklingError(f"info file holds a {module}.{name} object, which is not read "
                                     "(only numpy arrays, torch tensors and plain containers)")


def load_infos(path: str | Path) -> list[dict]:
    """The ``data_list`` of an official info pkl (list of per-scene dicts)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"official info file not found: {path}")
    with path.open("rb") as fh:
        try:
            data = RestrictedUnpickler(fh).load()
        except (pickle.UnpicklingError, EOFError) as exc:
            raise ValueError(f"{path}: {exc}") from None
    infos = data.get("data_list") if isinstance(data, dict) else data
    if not isinstance(infos, list) or not all(isinstance(i, dict) for i in infos):
        raise ValueError(f"{path}: expected {{'data_list': [dict, ...]}} or a list of dicts")
    return infos


def read_class_embedding(root: str | Path, name: str = CLASS_EMBEDDING_FILE) -> torch.Tensor:
    """``<root>/scannet_cls_embedding.pth``: (K classes, P prototypes, D) float tensor."""
    path = Path(root) / name
    if not path.is_file():
        raise FileNotFoundError(f"class embedding file not found: {path}")
    emb = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(emb, torch.Tensor) or emb.ndim != 3:
        raise ValueError(f"{path}: expected a (K, P, D) tensor, got {getattr(emb, 'shape', type(emb))}")
    return emb


def _bin(root: Path, folder: str, name: str, dtype: type, what: str) -> np.ndarray:
    path = root / folder / Path(str(name)).name
    if not path.is_file():
        raise FileNotFoundError(f"{what} file not found: {path}")
    return np.fromfile(path, dtype=dtype)


def scene_id_of(info: dict) -> str:
    return Path(str(info["lidar_points"]["lidar_path"])).stem


def read_official_scene(root: str | Path, info: dict) -> tuple[dict[str, np.ndarray], list[dict]]:
    """One scene of the official layout -> (arrays in :data:`.scannet.PROCESSED_KEYS` form plus
    ``pseudo_masks`` when the info has SAM3D masks, referring entries ``{"description", "instance",
    "object_id"}``)."""
    root = Path(root)
    lidar = info.get("lidar_points", {})
    if "lidar_path" not in lidar:
        raise ValueError(f"info without lidar_points.lidar_path (keys: {sorted(info)})")
    sid = scene_id_of(info)
    feats = int(lidar.get("num_pts_feats", 6))
    raw = _bin(root, FOLDERS["points"], lidar["lidar_path"], np.float32, "points")
    if raw.size % feats:
        raise ValueError(f"scene {sid}: points file size {raw.size} is not a multiple of {feats} features")
    raw = raw.reshape(-1, feats)
    n = len(raw)
    nyu40 = _bin(root, FOLDERS["semantic"], info["pts_semantic_mask_path"], np.int64, "semantic_mask")
    objects = _bin(root, FOLDERS["instance"], info["pts_instance_mask_path"], np.int64, "instance_mask")
    sp_raw = _bin(root, FOLDERS["superpoints"], info["super_pts_path"], np.int64, "super_points")
    for what, arr in (("semantic_mask", nyu40), ("instance_mask", objects), ("super_points", sp_raw)):
        if len(arr) != n:
            raise ValueError(f"scene {sid}: {what} has {len(arr)} entries, points has {n}")
    lut = np.full(max(int(nyu40.max(initial=0)), max(NYU40_TO_SCANNET20)) + 1, IGNORE_INDEX, np.int64)
    lut[list(NYU40_TO_SCANNET20)] = list(NYU40_TO_SCANNET20.values())
    semantic20 = np.where(nyu40 >= 0, lut[np.clip(nyu40, 0, None)], IGNORE_INDEX)
    thing = np.array(IS_THING + (False,))[np.where(semantic20 >= 0, semantic20, len(IS_THING))]
    inst_obj = np.where(thing, objects, 0)
    object_ids = np.unique(inst_obj[inst_obj > 0])
    instance = np.full(n, IGNORE_INDEX, np.int64)
    pos = np.searchsorted(object_ids, inst_obj)
    instance[inst_obj > 0] = pos[inst_obj > 0]
    _, first = np.unique(instance[inst_obj > 0], return_index=True)
    instance_class = semantic20[np.flatnonzero(inst_obj > 0)[first]]  # each instance's first point
    seg_values, superpoints = np.unique(sp_raw, return_inverse=True)
    colors = (raw[:, 3:6] / 255.0).clip(0, 1).astype(np.float32)
    data = {"points": raw[:, :3].astype(np.float32), "colors": colors,
            "superpoints": superpoints.astype(np.int64), "semantic20": semantic20,
            "semantic200": np.full(n, IGNORE_INDEX, np.int64), "instance": instance,
            "instance_class": instance_class.astype(np.int64),
            "instance_class200": np.full(len(object_ids), IGNORE_INDEX, np.int64),
            "instance_object_id": object_ids - 1}
    pseudo = info.get("sam3d_pseudo_sp_masks")
    if pseudo is not None:
        pseudo = np.asarray(pseudo.cpu().numpy() if isinstance(pseudo, torch.Tensor) else pseudo).astype(bool)
        if pseudo.ndim != 2 or (pseudo.shape[0] and pseudo.shape[1] <= seg_values.max()):
            raise ValueError(f"scene {sid}: sam3d_pseudo_sp_masks shape {pseudo.shape} does not cover "
                             f"superpoint ids up to {int(seg_values.max())}")
        data["pseudo_masks"] = pseudo[:, seg_values] if len(pseudo) else np.zeros((0, len(seg_values)), bool)
    index_of_object = {int(o) - 1: i for i, o in enumerate(object_ids)}
    referring = []
    for key, entry in (info.get("text_info") or {}).items():
        inst = index_of_object.get(int(key))
        if inst is None:
            continue  # the official pipeline asserts; an object without ScanNet20 thing points has no target
        referring += [{"description": str(t).strip(), "instance": inst, "object_id": int(key)}
                      for t in entry.get("text", [])]
    return data, referring


class OfficialScanNetDataset(PromptedScenes):
    """``ds[i] -> SceneSample`` over ``<root>/uniseg3d_infos_<split>.pkl`` and its .bin files.

    Same arguments and sampling as :class:`.dataset.ScanNetDataset` (ScanNet20 only: the
    official masks hold NYU40 ids). ``use_pseudo_masks=False`` drops the SAM3D masks.
    """

    def __init__(self, root: str | Path, split: str, augment: bool = False, num_clicks: int | None = 8,
                 num_texts: int | None = 4, label_set: str = "scannet20", seed: int = 0,
                 augment_cfg: AugmentConfig | None = None, vocabulary: list[str] | None = None,
                 scenes: list[str] | None = None, click_mode: str = "official",
                 text_mode: str = "per_object", use_pseudo_masks: bool = True) -> None:
        self._settings(augment, num_clicks, num_texts, label_set, seed, augment_cfg, vocabulary, click_mode,
                       text_mode, use_pseudo_masks)
        if label_set != "scannet20":
            raise ValueError(f"the official prepared data holds NYU40 labels: label_set must be scannet20, "
                             f"got {label_set!r}")
        self.root, self.split = Path(root), split
        self.infos = load_infos(self.root / INFO_FILE.format(split=split))
        if scenes is not None:
            wanted = set(scenes)
            self.infos = [i for i in self.infos if scene_id_of(i) in wanted]
        if not self.infos:
            raise ValueError(f"{self.root / INFO_FILE.format(split=split)}: no scenes")

    def __len__(self) -> int:
        return len(self.infos)

    @property
    def scene_ids(self) -> list[str]:
        return [scene_id_of(i) for i in self.infos]

    def _read(self, index: int) -> tuple[dict, list[dict], str]:
        info = self.infos[index]
        data, referring = read_official_scene(self.root, info)
        return data, referring, scene_id_of(info)
