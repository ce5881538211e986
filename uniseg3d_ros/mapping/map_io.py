"""Saving and loading ``SceneMap`` files, atomically (pure numpy; open3d only for ``.ply``).

Formats:
- ``.npz``: the exact internal state (keys, mean points, colors, counts, last_seen) plus the map
  configuration; ``load`` restores a map whose ``snapshot()`` arrays are bit-identical.
- ``.ply``: binary PLY written by Open3D for viewers (MeshLab, CloudCompare, RViz via tools): float xyz,
  uchar red/green/blue, int ``count``, double ``last_seen``. Loading a PLY re-voxelizes the points at
  the requested ``voxel_size`` (colors are quantized to 8 bits); it is not an exact round trip.

Writes go to a temporary file in the destination directory (created with mode 0666 & ~umask), are
flushed and fsync'ed, then moved into place with ``os.replace`` (or ``os.link`` when overwriting is not
allowed); a crash leaves either the old file or the new one, never a partial file, and at worst a
temporary file that :func:`remove_stale_temp_files` recognises and deletes.
"""

from __future__ import annotations

import os
import secrets
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from uniseg3d_ros.mapping.scene_map import SceneMap
from uniseg3d_ros.mapping.voxel_hash import COORD_MAX, COORD_MIN, pack_keys, unpack_keys

__all__ = ["load_map", "remove_stale_temp_files", "save_map"]

FORMAT_NAME = "uniseg3d_scene_map"
_EMPTY_PLY = "\n".join([
    "ply", "format binary_little_endian 1.0", "comment uniseg3d_ros empty scene map", "element vertex 0",
    "property float x", "property float y", "property float z", "property uchar red", "property uchar green",
    "property uchar blue", "property int count", "property double last_seen", "end_header", "",
]).encode()
FORMAT_VERSION = 1


TEMP_MARK = ".uniseg3d-tmp"  # in every temporary file name: ``.<stem>.<token>.uniseg3d-tmp<suffix>``


def _create_temp(directory: Path, path: Path) -> Path:
    """Create an empty temp file next to ``path`` with mode 0666 & ~umask (never through a symlink)."""
    for _ in range(100):
        tmp = directory / f".{path.stem}.{secrets.token_hex(4)}{TEMP_MARK}{path.suffix}"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o666)
        except FileExistsError:
            continue
        os.close(fd)
        return tmp
    raise OSError(f"cannot create a temporary file in {directory}")


def _atomic_write(path: Path, write, overwrite: bool = True) -> None:
    """Call ``write(tmp_path)`` on a temp file next to ``path``, fsync it, then move it into place:
    ``os.replace`` when ``overwrite``, else ``os.link`` (FileExistsError if ``path`` exists; the
    check and the move are one atomic step). Renaming replaces a symlink at ``path``, never writes
    through it. The file gets the process umask's mode (0644 with the usual umask 022)."""
    path = Path(path)
    directory = path.parent if str(path.parent) else Path(".")
    if not directory.is_dir():
        raise ValueError(f"directory of map path does not exist: {directory}")
    tmp = _create_temp(directory, path)
    try:
        write(str(tmp))
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        if overwrite:
            os.replace(tmp, path)
        else:
            os.link(tmp, path, follow_symlinks=False)
            os.unlink(tmp)
    except BaseException:
        if os.path.lexists(tmp):
            os.unlink(tmp)
        raise
    try:  # make the rename durable (best effort; not supported everywhere)
        dfd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


def remove_stale_temp_files(directory: str | Path) -> list[Path]:
    """Delete the temporary files a killed writer left under ``directory`` (recursively, without
    following symlinks); returns what was removed. Only names :func:`save_map` makes are touched."""
    removed = []
    for root, _dirs, files in os.walk(directory, followlinks=False):
        for name in files:
            if name.startswith(".") and TEMP_MARK in name:
                target = Path(root) / name
                target.unlink(missing_ok=True)
                removed.append(target)
    return removed


def save_map(scene_map: SceneMap, path: str | Path, overwrite: bool = True) -> None:
    """Write ``scene_map`` to ``path`` (``.npz`` exact state or ``.ply`` for viewers), atomically.
    With ``overwrite=False`` an existing ``path`` raises FileExistsError and is left untouched."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".npz", ".ply"):
        raise ValueError(f"map path must end in .npz or .ply, got {str(path)!r}")
    snap = scene_map.snapshot()  # brief lock; the file work below runs without it
    if suffix == ".npz":
        nan3 = np.full(3, np.nan)
        arrays = {
            "format": np.array(FORMAT_NAME),
            "format_version": np.array(FORMAT_VERSION),
            "voxel_size": np.array(scene_map.voxel_size),
            "max_voxels": np.array(scene_map.max_voxels),
            "crop_min": nan3 if scene_map.crop_min is None else scene_map.crop_min,
            "crop_max": nan3 if scene_map.crop_max is None else scene_map.crop_max,
            "max_range": np.array(np.nan if scene_map.max_range is None else scene_map.max_range),
            "keys": snap.keys, "points": snap.points, "colors": snap.colors,
            "counts": snap.counts, "last_seen": snap.last_seen,
        }

        def write(tmp: str) -> None:
            with open(tmp, "wb") as f:
                np.savez(f, **arrays)

        _atomic_write(path, write, overwrite)
        return

    if len(snap) == 0:  # Open3D refuses to write an empty cloud; a header-only PLY is valid
        def write_empty(tmp: str) -> None:
            with open(tmp, "wb") as f:
                f.write(_EMPTY_PLY)

        _atomic_write(path, write_empty, overwrite)
        return

    import open3d as o3d

    def write_ply(tmp: str) -> None:
        pc = o3d.t.geometry.PointCloud()
        pc.point.positions = o3d.core.Tensor(np.ascontiguousarray(snap.points))
        pc.point.colors = o3d.core.Tensor(np.rint(snap.colors * 255.0).astype(np.uint8))
        pc.point["count"] = o3d.core.Tensor(np.ascontiguousarray(snap.counts.reshape(-1, 1)))
        pc.point["last_seen"] = o3d.core.Tensor(np.ascontiguousarray(snap.last_seen.reshape(-1, 1)))
        if not o3d.t.io.write_point_cloud(tmp, pc):
            raise OSError(f"open3d failed to write {tmp}")

    _atomic_write(path, write_ply, overwrite)


def _field(data: Any, name: str, shape_tail: tuple, kinds: str) -> np.ndarray:
    if name not in data:
        raise ValueError(f"map file is missing field {name!r}")
    a = data[name]
    if a.ndim != 1 + len(shape_tail) or a.shape[1:] != shape_tail:
        expected = "(N, " + ", ".join(map(str, shape_tail)) + ")" if shape_tail else "(N,)"
        raise ValueError(f"map field {name!r} has shape {a.shape}, expected {expected}")
    if a.dtype.kind not in kinds:
        raise ValueError(f"map field {name!r} has dtype {a.dtype}, expected kind {kinds!r}")
    return a


def _scalar(data: Any, name: str) -> float:
    if name not in data:
        raise ValueError(f"map file is missing field {name!r}")
    a = np.asarray(data[name])
    if a.shape != () or a.dtype.kind not in "iuf":
        raise ValueError(f"map field {name!r} must be a numeric scalar, got shape {a.shape} dtype {a.dtype}")
    return float(a)


def _load_npz(path: Path, overrides: dict) -> SceneMap:
    try:
        npz = np.load(path, allow_pickle=False)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as e:
        raise ValueError(f"{path} is not a readable .npz map: {e}") from e
    with npz as data:
        if "format" not in data or str(data["format"]) != FORMAT_NAME:
            raise ValueError(f"map file field 'format' must be {FORMAT_NAME!r}")
        if int(_scalar(data, "format_version")) != FORMAT_VERSION:
            raise ValueError(
                f"map field 'format_version' is {data['format_version']}, expected {FORMAT_VERSION}"
            )
        voxel_size = _scalar(data, "voxel_size")
        if not (np.isfinite(voxel_size) and voxel_size > 0):
            raise ValueError(f"map field 'voxel_size' must be finite and > 0, got {voxel_size}")
        cfg: dict[str, Any] = {"voxel_size": voxel_size, "max_voxels": int(_scalar(data, "max_voxels"))}
        crop = [np.asarray(data[k], dtype=np.float64) if k in data else None
                for k in ("crop_min", "crop_max")]
        if crop[0] is not None and crop[1] is not None and np.all(np.isfinite(crop[0])):
            cfg["crop_min"], cfg["crop_max"] = crop
        max_range = _scalar(data, "max_range") if "max_range" in data else float("nan")
        cfg["max_range"] = None if np.isnan(max_range) else max_range
        keys = _field(data, "keys", (), "i").astype(np.int64)
        points = _field(data, "points", (3,), "f").astype(np.float32)
        colors = _field(data, "colors", (3,), "f").astype(np.float32)
        counts = _field(data, "counts", (), "iu").astype(np.int64)
        last_seen = _field(data, "last_seen", (), "f").astype(np.float64)
    n = keys.shape[0]
    for name, a in (("points", points), ("colors", colors), ("counts", counts), ("last_seen", last_seen)):
        if a.shape[0] != n:
            raise ValueError(f"map field {name!r} has {a.shape[0]} rows, but 'keys' has {n}")
    if not np.all(np.isfinite(points)):
        raise ValueError("map field 'points' contains non-finite values")
    if not np.all(np.isfinite(colors)) or colors.size and (colors.min() < 0 or colors.max() > 1):
        raise ValueError("map field 'colors' must be finite and in [0, 1]")
    if counts.size and (counts.min() < 1 or counts.max() > np.iinfo(np.int32).max):
        raise ValueError("map field 'counts' must be in [1, 2**31 - 1]")
    if not np.all(np.isfinite(last_seen)):
        raise ValueError("map field 'last_seen' contains non-finite values")
    if np.unique(keys).shape[0] != n:
        raise ValueError("map field 'keys' contains duplicates")
    coords = unpack_keys(keys)
    if n and (keys.min() < 0 or not np.array_equal(pack_keys(coords), keys)):
        raise ValueError("map field 'keys' holds values that are not packed voxel keys")
    # Each mean point lies inside (or, by float rounding, on the boundary of) its voxel.
    rel = points.astype(np.float64) / voxel_size - coords
    if n and (rel.min() < -1e-3 or rel.max() > 1 + 1e-3):
        raise ValueError("map field 'points' does not match 'keys' at this 'voxel_size'")
    if "voxel_size" in overrides and overrides["voxel_size"] != voxel_size:
        raise ValueError(f"cannot override 'voxel_size' ({voxel_size}) of an .npz map")
    cfg.update(overrides)
    scene_map = SceneMap(**cfg)
    scene_map._restore(keys, points, colors, counts.astype(np.int32), last_seen)
    return scene_map


def _ply_vertex_count(path: Path) -> int:
    """Number of vertices declared in the PLY header; ValueError when it is not a PLY file."""
    with open(path, "rb") as f:
        head = f.read(4096)
    if not head.startswith(b"ply"):
        raise ValueError(f"{path} is not a PLY file (no 'ply' magic)")
    for line in head.split(b"end_header")[0].splitlines():
        parts = line.split()
        if parts[:2] == [b"element", b"vertex"] and len(parts) == 3 and parts[2].isdigit():
            return int(parts[2])
    raise ValueError(f"{path}: PLY header declares no 'element vertex'")


def _load_ply(path: Path, overrides: dict) -> SceneMap:
    if _ply_vertex_count(path) == 0:
        return SceneMap(**overrides)
    import open3d as o3d

    pc = o3d.t.io.read_point_cloud(str(path))
    if "positions" not in pc.point or pc.point.positions.shape[0] == 0:
        raise ValueError(f"{path}: could not read vertex 'positions' (x y z)")
    points = pc.point.positions.numpy().astype(np.float64)
    if not np.all(np.isfinite(points)):
        raise ValueError(f"{path}: field 'positions' contains non-finite values")
    colors = None
    if "colors" in pc.point:
        c = pc.point.colors.numpy()
        colors = c.astype(np.float32) / 255.0 if c.dtype == np.uint8 else np.clip(c.astype(np.float32), 0, 1)
    weights = pc.point["count"].numpy().reshape(-1) if "count" in pc.point else None
    stamps = pc.point["last_seen"].numpy().reshape(-1) if "last_seen" in pc.point else None
    scene_map = SceneMap(**overrides)
    if weights is None and stamps is None:
        scene_map.integrate(points, colors, None, stamp=0.0)
        return scene_map
    # Re-voxelize with the stored per-point counts as weights and keep the latest stamp per voxel.
    if weights is not None and (weights.min() < 1):
        raise ValueError(f"{path}: field 'count' must be >= 1")
    coords = np.floor(points / scene_map.voxel_size)
    if coords.min() < COORD_MIN or coords.max() > COORD_MAX:
        raise ValueError(f"{path}: points lie beyond the map extent at voxel_size {scene_map.voxel_size}")
    keys, inverse = np.unique(pack_keys(coords.astype(np.int64)), return_inverse=True)
    w = np.ones(points.shape[0]) if weights is None else weights.astype(np.float64)
    wsum = np.bincount(inverse, weights=w)
    mean_p = np.stack([np.bincount(inverse, weights=w * points[:, a]) for a in range(3)], 1) / wsum[:, None]
    if colors is None:
        mean_c = np.full((keys.shape[0], 3), 0.5)
    else:
        mean_c = np.stack([np.bincount(inverse, weights=w * colors[:, a]) for a in range(3)], 1)
        mean_c /= wsum[:, None]
    last = np.zeros(keys.shape[0])
    if stamps is not None:
        last = np.full(keys.shape[0], -np.inf)
        np.maximum.at(last, inverse, stamps.astype(np.float64))
    scene_map._restore(keys, mean_p.astype(np.float32), mean_c.astype(np.float32),
                       np.minimum(wsum, np.iinfo(np.int32).max).astype(np.int32), last)
    return scene_map


def load_map(path: str | Path, **overrides: Any) -> SceneMap:
    """Load a map written by ``save_map``.

    ``.npz`` restores the exact state and configuration (``overrides`` replace config values, e.g.
    ``max_voxels``). ``.ply`` builds a new map from the points with ``SceneMap(**overrides)``.
    Raises ``ValueError`` naming the bad field for missing, inconsistent or corrupt data.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no map file at {path}")
    suffix = path.suffix.lower()
    if suffix == ".npz":
        return _load_npz(path, overrides)
    if suffix == ".ply":
        return _load_ply(path, overrides)
    raise ValueError(f"map path must end in .npz or .ply, got {str(path)!r}")
