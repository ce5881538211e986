"""SceneMap integration throughput and memory vs Open3D voxel down-sampling, measured in one run.

Frames: 640x480 uint16 depth + RGB ray-cast from an Open3D mesh room (tests/test_scene_map.py), back-
projected with ``uniseg3d_ros.mapping.rgbd.depth_to_points`` (~250-300k points each), 2 cm voxels.

For each starting map size (voxels already in the map, pre-filled with distinct voxels away from the room)
the script integrates every frame and reports the median time per frame. References, same frames, same
process, already transformed into the map frame (transforming is NOT charged to Open3D):

- ``o3d incr``: the incremental Open3D way to keep a map: ``(map_cloud + frame_cloud).voxel_down_sample``
  per frame, where ``map_cloud`` starts with the same pre-filled voxels (numpy -> Vector3dVector
  conversion of the frame included, since frames arrive as numpy arrays);
- ``o3d batch``: one ``voxel_down_sample`` of all frames concatenated, divided by the number of frames
  (conversion included; ``vds only`` excludes it). This is the lower bound of any incremental method.

Memory: tracemalloc peak (numpy allocations) while integrating the frames, and ``SceneMap.nbytes``.

    OMP_NUM_THREADS=1 NUMBA_NUM_THREADS=1 .venv/bin/python bench/bench_scene_map.py   # default, < 2 min
    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_scene_map.py --kernel-only          # kernel vs Open3D
    .venv/bin/python bench/bench_scene_map.py --sizes 0 --frames 4 --repeats 1   # quick look
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import open3d as o3d  # noqa: E402

from tests.test_scene_map import build_room, look_at, render  # noqa: E402
from uniseg3d_ros.mapping.pointcloud2 import cloud_to_arrays, points_to_cloud, segmented_cloud  # noqa: E402
from uniseg3d_ros.mapping.rgbd import depth_to_points  # noqa: E402
from uniseg3d_ros.mapping.scene_map import SceneMap, transform_points  # noqa: E402

K640 = np.array([[525.0, 0.0, 319.5], [0.0, 525.0, 239.5], [0.0, 0.0, 1.0]])
VOXEL = 0.02


def make_frames(n: int) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """n posed 640x480 frames (points (M,3) camera frame, colors (M,3), pose (4,4)) around the room."""
    scene, rgbs = build_room()
    frames = []
    for i in range(n):
        a = 2 * np.pi * i / n
        eye = np.array([2.0 + 0.4 * np.cos(a), 1.5 + 0.3 * np.sin(a), 1.3 + 0.2 * np.sin(3 * a)])
        pose = look_at(eye, eye + np.array([np.cos(a + 0.3), np.sin(a + 0.3), -0.35]))
        depth, color = render(scene, rgbs, pose, K640, 640, 480)
        pts, cols = depth_to_points(depth, color, K640, max_depth=8.0)
        frames.append((pts, cols, pose))
    return frames


def prefill_points(n: int) -> np.ndarray:
    """(n, 3) float32 voxel centres of n distinct voxels on a plane 20 m below the room."""
    side = int(np.ceil(np.sqrt(max(n, 1))))
    ij = np.stack(np.unravel_index(np.arange(n), (side, side)), axis=1).astype(np.float32)
    z = np.full(n, -20.0 + 0.5 * VOXEL, np.float32)
    return np.column_stack([(ij + 0.5) * VOXEL, z]).astype(np.float32)


def to_o3d(points: np.ndarray, colors: np.ndarray | None = None) -> o3d.geometry.PointCloud:
    pcd = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(points.astype(np.float64)))
    if colors is not None:
        pcd.colors = o3d.utility.Vector3dVector(colors.astype(np.float64))
    return pcd


class Timer:
    """Wall and process-CPU seconds of one block (CPU time is robust on a shared, loaded machine)."""

    def __enter__(self):
        self.w0, self.c0 = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.wall, self.cpu = time.perf_counter() - self.w0, time.process_time() - self.c0


def run_size(frames, world, prefill: np.ndarray, repeats: int, max_voxels: int, incr_frames: int) -> dict:
    """Integrate every frame (``repeats`` times) into a SceneMap pre-filled with ``prefill``; the Open3D
    incremental reference runs interleaved on the first ``incr_frames`` frames of the first repeat."""
    ours_w, ours_c, ref_w, ref_c, n_points = [], [], [], [], 0
    m = None
    for rep in range(repeats):
        m = SceneMap(VOXEL, max_voxels=max_voxels)
        if len(prefill):
            m.integrate(prefill, None, np.eye(4), stamp=-1.0)
        ref_map = to_o3d(prefill, np.full_like(prefill, 0.5)) if len(prefill) else o3d.geometry.PointCloud()
        for i, (pts, cols, pose) in enumerate(frames):
            with Timer() as t:
                n_points = m.integrate(pts, cols, pose, stamp=float(i))
            ours_w.append(t.wall)
            ours_c.append(t.cpu)
            if rep == 0 and i < incr_frames:
                with Timer() as t:
                    ref_map = (ref_map + to_o3d(*world[i])).voxel_down_sample(VOXEL)
                ref_w.append(t.wall)
                ref_c.append(t.cpu)
    nbytes, size = m.nbytes, len(m)
    # Memory pass (tracemalloc slows allocation-heavy code a little, so it is separate from timing).
    m = SceneMap(VOXEL, max_voxels=max_voxels)
    if len(prefill):
        m.integrate(prefill, None, np.eye(4), stamp=-1.0)
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    for i, (pts, cols, pose) in enumerate(frames):
        m.integrate(pts, cols, pose, stamp=float(i))
    peak = tracemalloc.get_traced_memory()[1] - base
    tracemalloc.stop()
    def med(x: list[float]) -> float:
        return 1e3 * statistics.median(x) if x else float("nan")

    return {"wall": med(ours_w), "cpu": med(ours_c), "max_cpu": 1e3 * max(ours_c), "ref_wall": med(ref_w),
            "ref_cpu": med(ref_c), "pts": n_points, "nbytes": nbytes, "size": size, "peak": peak}


def bench_o3d_batch(world_frames, repeats: int) -> dict:
    allp = np.concatenate([p for p, _ in world_frames])
    allc = np.concatenate([c for _, c in world_frames])
    total_w, total_c, vds_c = [], [], []
    for _ in range(repeats):
        with Timer() as t_all:
            pcd = to_o3d(allp, allc)
            with Timer() as t_vds:
                pcd.voxel_down_sample(VOXEL)
        total_w.append(t_all.wall)
        total_c.append(t_all.cpu)
        vds_c.append(t_vds.cpu)
    n = len(world_frames)
    med = statistics.median
    return {"wall": 1e3 * med(total_w) / n, "cpu": 1e3 * med(total_c) / n, "vds_cpu": 1e3 * med(vds_c) / n}


def bench_kernel(frames, world, repeats: int) -> None:
    """Per 640x480 frame, same frames, same process, one thread: SceneMap.integrate with the compiled
    kernels and with the numpy twin (steady state: the room already in the map), against Open3D's bare
    ``voxel_down_sample`` of the frame (already in the map frame, already an Open3D cloud: conversion
    NOT charged), and a one-pass memory bound (reading the frame's points and colors once)."""
    maps = {b: SceneMap(VOXEL, backend=b) for b in ("numba", "numpy")}
    for m in maps.values():
        for i, (pts, cols, pose) in enumerate(frames):
            m.integrate(pts, cols, pose, stamp=float(i))
    times: dict[str, list[float]] = {"numba": [], "numpy": [], "o3d": [], "pass": []}
    clouds = [to_o3d(p, c) for p, c in world]
    for _ in range(max(3, repeats)):
        for i, (pts, cols, pose) in enumerate(frames):
            for b, m in maps.items():
                with Timer() as t:
                    m.integrate(pts, cols, pose, stamp=float(i))
                times[b].append(t.cpu)
            with Timer() as t:
                clouds[i].voxel_down_sample(VOXEL)
            times["o3d"].append(t.cpu)
            with Timer() as t:
                for _ in range(10):  # one read of points + colors (np.add.reduce streams the bytes)
                    np.add.reduce(pts, axis=None)
                    np.add.reduce(cols, axis=None)
            times["pass"].append(t.cpu / 10)
    med = {k: 1e3 * statistics.median(v) for k, v in times.items()}
    nbytes = frames[0][0].nbytes + frames[0][1].nbytes
    print(f"\nfusion kernel, {len(frames[0][0])} points/frame ({nbytes / 1e6:.1f} MB of points + colors), "
          f"medians of {len(times['o3d'])} frames, ms CPU:")
    print(f"  SceneMap.integrate numba {med['numba']:.2f} | numpy twin {med['numpy']:.2f} | "
          f"Open3D voxel_down_sample alone {med['o3d']:.2f} | o3d/numba {med['o3d'] / med['numba']:.2f}x")
    print(f"  one pass over the frame (memory bound) {med['pass']:.2f} ms = "
          f"{nbytes / med['pass'] / 1e6:.1f} GB/s; numba is {med['numba'] / med['pass']:.0f}x the bound")


def bench_codec(frame, repeats: int) -> None:
    """PointCloud2 decode / encode of one frame as an organized 640x480 x y z rgb cloud (NaN = no depth)."""
    pts, cols, _ = frame
    n = len(pts)
    label, inst = np.zeros(n, np.int64), np.full(n, -1, np.int64)
    msg = points_to_cloud(None, pts, cols)
    msg.height, msg.width, msg.row_step = 480, n // 480, msg.point_step * (n // 480)
    rows = {}
    for name, fn in [("decode x y z rgb (cloud_to_arrays)", lambda: cloud_to_arrays(msg)),
                     ("encode x y z rgb (points_to_cloud)", lambda: points_to_cloud(None, pts, cols)),
                     ("encode x y z rgb label instance (segmented_cloud)",
                      lambda: segmented_cloud(None, pts, cols, label, inst))]:
        times = []
        for _ in range(max(5, repeats)):
            with Timer() as t:
                fn()
            times.append(t.cpu)
        rows[name] = 1e3 * statistics.median(times)
    print(f"\nPointCloud2 codec, {n} points: " + "; ".join(f"{k} {v:.1f} ms" for k, v in rows.items()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--sizes", default="0,200000,1000000,2000000", help="pre-filled map sizes (voxels)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--kernel-only", action="store_true", help="only the fusion-kernel comparison")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]

    t_start = time.perf_counter()
    frames = make_frames(args.frames)
    world = [(transform_points(p, T), c) for p, c, T in frames]
    n_pts = [len(p) for p, _, _ in frames]
    print(f"frames: {len(frames)} x 640x480, median {int(np.median(n_pts))} points/frame, voxel {VOXEL} m, "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, cpus={os.cpu_count()}, "
          f"load avg {os.getloadavg()[0]:.1f}")
    bench_kernel(frames, world, args.repeats)
    if args.kernel_only:
        return
    batch = bench_o3d_batch(world, args.repeats)
    print(f"o3d batch reference (all frames concatenated, conversion included): {batch['cpu']:.1f} ms CPU "
          f"({batch['wall']:.1f} wall) per frame; voxel_down_sample alone {batch['vds_cpu']:.1f} ms CPU\n")
    print("medians per integrated frame; ms = process CPU time (wall time in brackets)")
    header = (f"{'map voxels':>11} | {'SceneMap ms':>15} | {'max ms':>6} | {'Mpts/s':>6} | "
              f"{'o3d incr ms':>15} | {'incr/ours':>9} | {'batch/ours':>10} | {'peak MB':>7} | "
              f"{'map MB':>6} | {'B/voxel':>7}")
    print(header)
    print("-" * len(header))
    for size in sizes:
        r = run_size(frames, world, prefill_points(size), args.repeats,
                     max_voxels=max(2_000_000, 2 * size + 1_000_000),
                     incr_frames=len(frames) if size <= 200_000 else min(3, len(frames)))
        ours = f"{r['cpu']:.1f} ({r['wall']:.1f})"
        ref = f"{r['ref_cpu']:.1f} ({r['ref_wall']:.1f})"
        mpts = r["pts"] / r["cpu"] / 1e3
        per_voxel = r["nbytes"] / max(r["size"], 1)
        print(f"{size:>11,} | {ours:>15} | {r['max_cpu']:>6.1f} | {mpts:>6.1f} | {ref:>15} | "
              f"{r['ref_cpu'] / r['cpu']:>9.2f} | {batch['cpu'] / r['cpu']:>10.2f} | "
              f"{r['peak'] / 2**20:>7.1f} | {r['nbytes'] / 2**20:>6.1f} | {per_voxel:>7.0f}")
    if max(sizes) >= 2_000_000:  # the hard cap at work: a full map that evicts while integrating
        r = run_size(frames, world, prefill_points(2_000_000), 1, max_voxels=2_000_000, incr_frames=0)
        print(f"\nat the 2,000,000-voxel cap (evicts 5% = 100k voxels when full): {r['cpu']:.1f} ms CPU "
              f"({r['wall']:.1f} wall) per frame, median; slowest frame {r['max_cpu']:.1f} ms CPU")
    bench_codec(frames[0], args.repeats)
    print(f"\ntotal bench time {time.perf_counter() - t_start:.0f} s")


if __name__ == "__main__":
    main()
