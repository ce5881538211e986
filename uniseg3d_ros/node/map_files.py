"""Where ``~/save_map`` may write: only under the ``map_directory`` parameter, by relative name.

A request names a file relative to the map directory (``room.ply``, ``site_a/run2.npz``). Refused,
each with a one-line reason (:class:`MapPathError`): empty names, other suffixes than ``.ply`` /
``.npz``, absolute paths, ``~``, ``..`` components, NUL bytes, sub-directories that do not exist or
are symbolic links, a symbolic link or a non-regular file at the target, and an existing file unless
the request sets ``overwrite``. Pure Python; the node calls :func:`prepare_map_directory` at start-up
(removes temporary files a killed write left), :func:`ensure_map_directory` (the first save creates
the directory) and :func:`resolve_map_path` per request. Writing itself (atomic) is
``uniseg3d_ros.mapping.map_io.save_map``.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path, PurePosixPath

from uniseg3d_ros.mapping.map_io import remove_stale_temp_files

SUFFIXES = (".ply", ".npz")


class MapPathError(ValueError):
    """A save request names a path outside the rules; the message is the reason for the client."""


def prepare_map_directory(directory: str) -> tuple[Path, list[Path]]:
    """Expand ``~`` in ``directory`` and delete the temporary map files a killed save left in it (if
    it exists; the first save creates it). Returns (the absolute directory, the files removed).
    Raises ValueError naming the parameter when it is empty or names something else than a directory."""
    if not directory.strip():
        raise ValueError("parameter 'map_directory' is empty: give the directory ~/save_map writes into")
    path = Path(os.path.expanduser(directory)).absolute()
    if path.exists() and not path.is_dir():
        raise ValueError(f"parameter 'map_directory' {directory!r} exists and is not a directory")
    return path, (remove_stale_temp_files(path) if path.is_dir() else [])


def ensure_map_directory(directory: Path) -> None:
    """Create ``directory`` (and parents; mode 0777 & ~umask) if missing; MapPathError if impossible."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise MapPathError(f"cannot create map_directory {str(directory)!r}: {exc.strerror or exc}") from exc


def resolve_map_path(directory: Path, name: str, overwrite: bool) -> Path:
    """The file ``name`` (relative) under ``directory`` that a save may write, or MapPathError."""
    if not name.strip():
        raise MapPathError(
            "path is empty: give a file name ending in .ply or .npz, relative to map_directory"
        )
    if "\x00" in name:
        raise MapPathError("path contains a NUL byte")
    if not name.lower().endswith(SUFFIXES):
        raise MapPathError(f"path must end in .ply or .npz, got {name!r}")
    if name.startswith("~"):
        raise MapPathError(
            f"path {name!r} starts with '~': give a name relative to map_directory ({directory})"
        )
    rel = PurePosixPath(name)
    if rel.is_absolute():
        raise MapPathError(f"path {name!r} is absolute: give a name relative to map_directory ({directory})")
    if ".." in rel.parts:
        raise MapPathError(
            f"path {name!r} contains '..': maps are saved only inside map_directory ({directory})"
        )
    here = directory
    for part in rel.parts[:-1]:
        here = here / part
        mode = _lstat_mode(here)
        if mode is None:
            raise MapPathError(
                f"sub-directory {str(here.relative_to(directory))!r} does not exist in map_directory"
            )
        if stat.S_ISLNK(mode):
            raise MapPathError(
                f"{str(here.relative_to(directory))!r} is a symbolic link; links are not followed"
            )
        if not stat.S_ISDIR(mode):
            raise MapPathError(f"{str(here.relative_to(directory))!r} is not a directory")
    target = here / rel.parts[-1]
    mode = _lstat_mode(target)
    if mode is not None:
        if stat.S_ISLNK(mode):
            raise MapPathError(f"{name!r} is a symbolic link; links are not followed or replaced")
        if not stat.S_ISREG(mode):
            raise MapPathError(f"{name!r} exists and is not a regular file")
        if not overwrite:
            raise MapPathError(f"{name!r} exists; set overwrite=true in the request to replace it")
    return target


def _lstat_mode(path: Path) -> int | None:
    try:
        return os.lstat(path).st_mode
    except FileNotFoundError:
        return None
