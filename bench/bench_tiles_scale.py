"""Apartment-sized maps: tiled ``segment`` time and peak memory against map size.

Maps: generated rooms (``uniseg3d_model.synthetic``, 2.5 cm mesh vertices, four room seeds reused)
laid out on a grid with 0.3 m gaps and fused at 2 cm, until the map holds 150k / 500k / 1.5M / 3M
voxels. Each size runs in a fresh process: build the map, then ``TiledEngine.segment`` (6 m tiles,
1 m overlap, shipped model, one thread); a second call with one new frame shows the per-tile
cache. Peak memory: the process's peak RSS (``ru_maxrss``) minus the RSS after the map was built
(what segmenting added), the RSS kept after it (per-tile caches for the next queries), and the
map's own ``SceneMap.nbytes``.

    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_tiles_scale.py                  # bounded memory
    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_tiles_scale.py --keep-entries   # fast prompted queries
    .venv/bin/python bench/bench_tiles_scale.py --layout-only   # tiles and the largest tile, no model
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def apartment(target_voxels: int):
    """A SceneMap of generated rooms on a grid, grown room by room until it holds target_voxels."""
    from uniseg3d_model.synthetic.scene import SceneConfig, generate_scene
    from uniseg3d_ros.mapping.scene_map import SceneMap

    rooms = [generate_scene(s, config=SceneConfig(spacing=0.025)) for s in range(4)]
    m = SceneMap(0.02, max_voxels=max(4_000_000, 2 * target_voxels))
    k, x, y, row_h = 0, 0.0, 0.0, 0.0
    while len(m) < target_voxels:
        sc = rooms[k % len(rooms)]
        ext = sc.vertices.max(0) - sc.vertices.min(0)
        if x > 30.0:
            x, y, row_h = 0.0, y + row_h + 0.3, 0.0
        pts = sc.vertices - sc.vertices.min(0) + np.float32([x, y, 0.0])
        cols = sc.colors
        need = target_voxels - len(m)
        if need < 0.8 * len(pts):  # the last room: only a slab of it, to land near the target
            keep = np.argsort(pts[:, 0], kind="stable")[: int(need * 1.05)]
            pts, cols = pts[keep], cols[keep]
        m.integrate(pts, cols, np.eye(4), stamp=float(k))
        x, row_h, k = x + ext[0] + 0.3, max(row_h, ext[1]), k + 1
    return m


def largest_tile(snap) -> int:
    from uniseg3d_ros.inference.tile_merge import tile_rows

    return max(len(r) for r in tile_rows(snap.points, 6.0, 1.0).values())


def layout_only(sizes: list[int]) -> None:
    """Voxels, tiles and the largest tile's voxels per map size (what bounds peak memory)."""
    from uniseg3d_ros.inference.tile_merge import tile_rows

    print(f"{'voxels':>10} {'tiles':>6} {'largest tile':>13}")
    for size in sizes:
        snap = apartment(size).snapshot()
        layout = tile_rows(snap.points, 6.0, 1.0)
        print(f"{len(snap):>10,} {sum(len(r) >= 200 for r in layout.values()):>6} {largest_tile(snap):>13,}")


def one(size: int, keep: bool) -> dict:
    import torch

    from uniseg3d_ros.inference.loading import load_engine
    from uniseg3d_ros.inference.tiles import TileConfig, TiledEngine

    torch.set_num_threads(1)
    engine = load_engine("")
    m = apartment(size)
    snap = m.snapshot()
    base = rss_mb()
    tiled = TiledEngine(engine, TileConfig(tile_size=6.0, overlap=1.0, keep_entries=keep))
    t = time.perf_counter()
    res = tiled.segment(snap)
    seconds = time.perf_counter() - t
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    assert res.success, res.message
    m.integrate(np.float32([[1.0, 1.0, 0.05]]), None, np.eye(4), stamp=99.0)  # a small new frame
    t = time.perf_counter()
    again = tiled.segment(m.snapshot())
    t_again = time.perf_counter() - t
    return {"voxels": len(snap), "tiles": len(tiled.tiles), "seconds": seconds,
            "instances": len(res.instances), "peak_added_mb": peak - base, "map_mb": m.nbytes / 2**20,
            "again_s": t_again, "again_encoded": tiled.encoded_last, "again_ok": again.success,
            "retained_mb": rss_mb() - base, "largest_tile": largest_tile(snap)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="150000,500000,1500000,3000000")
    ap.add_argument("--keep-entries", action="store_true",
                    help="keep every tile's engine entry (fast refer/clicks, memory grows with the map)")
    ap.add_argument("--layout-only", action="store_true",
                    help="tiles and the largest tile per size, no model")
    ap.add_argument("--one", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.layout_only:
        layout_only([int(s) for s in args.sizes.split(",")])
        return
    if args.one:
        print(json.dumps(one(args.one, args.keep_entries)))
        return
    print(f"tiled segment, 6 m tiles + 1 m overlap, keep_entries={args.keep_entries}, shipped model, "
          f"OMP_NUM_THREADS="
          f"{os.environ.get('OMP_NUM_THREADS')}, load avg {os.getloadavg()[0]:.1f} on {os.cpu_count()} cpus")
    head = (f"{'voxels':>10} {'tiles':>6} {'largest':>8} {'segment s':>10} {'s/Mvoxel':>9} {'peak +MB':>9} "
            f"{'kept +MB':>9} {'map MB':>7} {'instances':>9} | {'after 1 frame: s, tiles re-encoded':>34}")
    print(head)
    print("-" * len(head))
    for size in [int(s) for s in args.sizes.split(",")]:
        cmd = [sys.executable, __file__, "--one", str(size)]
        cmd += ["--keep-entries"] if args.keep_entries else []
        out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
        if out.returncode:
            print(f"{size}: failed\n{out.stderr[-2000:]}")
            continue
        r = json.loads(out.stdout.strip().splitlines()[-1])
        per_m = r["seconds"] / r["voxels"] * 1e6
        print(f"{r['voxels']:>10,} {r['tiles']:>6} {r['largest_tile']:>8,} {r['seconds']:>10.1f} "
              f"{per_m:>9.1f} "
              f"{r['peak_added_mb']:>9.0f} {r['retained_mb']:>9.0f} {r['map_mb']:>7.0f} "
              f"{r['instances']:>9} | "
              f"{r['again_s']:>10.1f} s, {r['again_encoded']} of {r['tiles']}")


if __name__ == "__main__":
    main()
