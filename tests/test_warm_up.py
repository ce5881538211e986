"""The node compiles its numba kernels at start (``SceneMap.warm_up``, ``warm_up_segment_points``):
afterwards the first RGB-D frame, the first colourless cloud and the first map's superpoints compile
nothing more (on a cold cache each compile stalled the node's sensor callbacks for seconds)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

PROBE = """
import numpy as np
from uniseg3d_model import graph_segmentation as gs
from uniseg3d_model.superpoints import segment_points, warm_up_segment_points
from uniseg3d_ros.inference.engine import EngineConfig
from uniseg3d_ros.mapping import fuse_kernel as fk
from uniseg3d_ros.mapping.rgbd import depth_to_points
from uniseg3d_ros.mapping.scene_map import SceneMap

kernels = [getattr(fk, n) for n in dir(fk) if hasattr(getattr(fk, n), "signatures")]
assert kernels and not any(k.signatures for k in kernels), "compiled before the warm-up"
SceneMap.warm_up()
sp = EngineConfig().superpoint_kwargs
warm_up_segment_points(**sp)

def compiled():
    out = {k.py_func.__name__: len(k.signatures) for k in kernels}
    out["segment"] = len(gs._numba_kernel.signatures) if gs._numba_kernel is not None else 0
    return out

before = compiled()
# the kernels Python calls (the others are compiled into them)
assert all(before[k] for k in ("_group_kernel", "_lookup_kernel", "_update_kernel", "segment")), before
# what the node fuses: an RGB-D frame (uint8 image -> float32 points and colours), then a cloud
depth = np.full((60, 80), 1500, np.uint16)
depth[20:40] = 2500
color = np.random.default_rng(0).integers(0, 255, (60, 80, 3), dtype=np.uint8)
pts, cols = depth_to_points(depth, color, np.array([[60.0, 0, 40], [0, 60.0, 30], [0, 0, 1]]))
m = SceneMap(max_voxels=500)
m.integrate(pts, cols, np.eye(4), 0.0)
m.integrate(pts + np.float32(1.0), None, np.eye(4), 1.0)  # a cloud without colour: float32 points, None
snap = m.snapshot()
segment_points(np.array(snap.points), np.array(snap.colors), **sp)
after = compiled()
assert after == before, (before, after)
print("OK", sum(after.values()))
"""


def test_first_frame_cloud_and_superpoints_compile_nothing_after_warm_up() -> None:
    proc = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, cwd=ROOT,
                          timeout=300)
    assert proc.returncode == 0 and proc.stdout.startswith("OK"), proc.stderr[-2000:]
