"""ScanRefer sentences joined to our processed instances.

ScanRefer JSON (``ScanRefer_filtered_<split>.json``) is a list of entries with at
least ``scene_id``, ``object_id`` (the aggregation ``objectId``) and
``description``. Preparation joins each entry to the processed instance index of
its object and writes ``<root>/<split>_referring.json``: a list of
``{"scene_id", "object_id", "instance", "ann_id", "object_name", "description"}``.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np

REQUIRED_FIELDS = ("scene_id", "object_id", "description")


def load_scanrefer(path: str | Path) -> list[dict]:
    """Read and validate a ScanRefer JSON file (list of entries)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ScanRefer file not found: {path}")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: malformed JSON ({exc})") from None
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a JSON list of ScanRefer entries, got {type(data).__name__}")
    out = []
    for i, entry in enumerate(data):
        if not isinstance(entry, dict):
            raise ValueError(f"{path}: entry {i} is not an object")
        missing = [k for k in REQUIRED_FIELDS if k not in entry]
        if missing:
            raise ValueError(f"{path}: entry {i} lacks field(s) {missing}")
        try:
            object_id = int(entry["object_id"])
        except (TypeError, ValueError):
            raise ValueError(f"{path}: entry {i} has non-integer object_id {entry['object_id']!r}") from None
        out.append({
            "scene_id": str(entry["scene_id"]),
            "object_id": object_id,
            "ann_id": str(entry.get("ann_id", "")),
            "object_name": str(entry.get("object_name", "")),
            "description": str(entry["description"]).strip(),
        })
    return out


def join_scanrefer(entries: list[dict], object_ids: dict[str, np.ndarray]) -> tuple[list[dict], int]:
    """Attach ``instance`` (index into the scene's processed instances) to each entry.

    ``object_ids[scene_id]``: ``(I,)`` aggregation objectId of each processed instance.
    Entries for scenes not in ``object_ids`` are skipped silently (another split);
    entries whose object is not an instance of its scene are dropped and counted.
    Returns ``(joined entries, number unmatched)``.
    """
    joined: list[dict] = []
    unmatched = 0
    lookup = {sid: {int(o): i for i, o in enumerate(np.asarray(ids).tolist())}
              for sid, ids in object_ids.items()}
    for e in entries:
        table = lookup.get(e["scene_id"])
        if table is None:
            continue
        inst = table.get(e["object_id"])
        if inst is None:
            unmatched += 1
            continue
        joined.append({**e, "instance": inst})
    return joined, unmatched


def join_and_warn(entries: list[dict], object_ids: dict[str, np.ndarray], split: str) -> list[dict]:
    joined, unmatched = join_scanrefer(entries, object_ids)
    if unmatched:
        warnings.warn(f"ScanRefer ({split}): {unmatched} sentence(s) refer to objects that are not processed "
                      "instances; left out", stacklevel=2)
    return joined


def write_referring(path: str | Path, entries: list[dict]) -> None:
    Path(path).write_text(json.dumps(entries, indent=0))


def read_referring(path: str | Path) -> dict[str, list[dict]]:
    """``<split>_referring.json`` -> ``{scene_id: [entries]}``; a missing file gives ``{}``."""
    path = Path(path)
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: malformed JSON ({exc})") from None
    by_scene: dict[str, list[dict]] = {}
    for i, e in enumerate(data):
        if not isinstance(e, dict) or "instance" not in e or "description" not in e or "scene_id" not in e:
            raise ValueError(f"{path}: entry {i} lacks scene_id/instance/description")
        by_scene.setdefault(e["scene_id"], []).append(e)
    return by_scene
