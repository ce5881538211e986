"""Confined map saving (node/map_files.py) and file modes / no-clobber / temp clean-up (mapping/map_io.py).
Pure Python: the rules as functions; tests/test_node_inputs.py checks the same through the service."""

from __future__ import annotations

import os
import stat

import numpy as np
import pytest

from uniseg3d_ros.mapping.map_io import TEMP_MARK, load_map, save_map
from uniseg3d_ros.mapping.scene_map import SceneMap
from uniseg3d_ros.node.map_files import MapPathError, prepare_map_directory, resolve_map_path


@pytest.fixture()
def small_map():
    m = SceneMap(voxel_size=0.05)
    rng = np.random.default_rng(0)
    m.integrate(rng.uniform(0, 1, (200, 3)).astype(np.float32), None)
    return m


@pytest.mark.parametrize(
    "name, reason",
    [
        ("", "path is empty"),
        ("map.txt", ".ply or .npz"),
        ("/tmp/map.ply", "is absolute"),
        ("~/map.ply", "starts with '~'"),
        ("../map.ply", "contains '..'"),
        ("sub/../../map.ply", "contains '..'"),
        ("missing/map.ply", "does not exist"),
        ("link_dir/map.ply", "symbolic link"),
        ("link.ply", "symbolic link"),
        ("existing.ply", "set overwrite=true"),
        ("dir.ply", "not a regular file"),
        ("m\x00.ply", "NUL"),
    ],
)
def test_save_path_refusals_name_the_reason(tmp_path, name, reason):
    (tmp_path / "existing.ply").write_bytes(b"x")
    (tmp_path / "dir.ply").mkdir()
    (tmp_path / "link.ply").symlink_to(tmp_path.parent / "victim.ply")
    (tmp_path / "link_dir").symlink_to(tmp_path.parent)
    with pytest.raises(MapPathError, match=reason.replace(".", r"\.").replace("?", r"\?")):
        resolve_map_path(tmp_path, name, overwrite=False)


def test_save_path_accepts_relative_names_and_overwrite(tmp_path):
    (tmp_path / "site").mkdir()
    (tmp_path / "existing.npz").write_bytes(b"x")
    assert resolve_map_path(tmp_path, "room.ply", False) == tmp_path / "room.ply"
    assert resolve_map_path(tmp_path, "./site/run2.NPZ", False) == tmp_path / "site" / "run2.NPZ"
    assert resolve_map_path(tmp_path, "existing.npz", True) == tmp_path / "existing.npz"


@pytest.mark.parametrize("suffix", [".npz", ".ply"])
def test_saved_file_mode_follows_the_umask(tmp_path, small_map, suffix):
    old = os.umask(0o022)
    try:
        save_map(small_map, tmp_path / f"a{suffix}")
        os.umask(0o027)
        save_map(small_map, tmp_path / f"b{suffix}")
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / f"a{suffix}").st_mode) == 0o644
    assert stat.S_IMODE(os.stat(tmp_path / f"b{suffix}").st_mode) == 0o640
    assert len(load_map(tmp_path / f"a{suffix}")) == len(small_map)


def test_no_overwrite_leaves_the_existing_file_and_no_temp(tmp_path, small_map):
    target = tmp_path / "keep.npz"
    target.write_bytes(b"precious")
    with pytest.raises(FileExistsError):
        save_map(small_map, target, overwrite=False)
    assert target.read_bytes() == b"precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.npz"]
    save_map(small_map, target, overwrite=True)
    assert len(load_map(target)) == len(small_map)


def test_overwrite_replaces_a_symlink_instead_of_writing_through_it(tmp_path, small_map):
    victim = tmp_path / "victim.npz"
    victim.write_bytes(b"not yours")
    (tmp_path / "maps").mkdir()
    link = tmp_path / "maps" / "m.npz"
    link.symlink_to(victim)
    save_map(small_map, link, overwrite=True)  # map_io level: the rename replaces the link itself
    assert victim.read_bytes() == b"not yours" and not link.is_symlink()


def test_start_up_removes_temp_files_a_killed_save_left(tmp_path):
    (tmp_path / "site").mkdir()
    stale = [tmp_path / f".room.1a2b3c4d{TEMP_MARK}.ply", tmp_path / "site" / f".x.ffff0000{TEMP_MARK}.npz"]
    keep = [tmp_path / "room.ply", tmp_path / ".hidden.ply", tmp_path / "site" / "x.npz"]
    for p in stale + keep:
        p.write_bytes(b"partial")
    directory, removed = prepare_map_directory(str(tmp_path))
    assert directory == tmp_path and sorted(removed) == sorted(stale)
    assert all(p.exists() for p in keep) and not any(p.exists() for p in stale)
    with pytest.raises(ValueError, match="map_directory"):
        prepare_map_directory(str(tmp_path / "room.ply"))
    with pytest.raises(ValueError, match="map_directory"):
        prepare_map_directory("  ")
