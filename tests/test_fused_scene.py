"""Generated rooms as the node fuses them (``uniseg3d_ros.tools.fused_scene``) and the
``generate_synthetic --fused-out`` data they give: node voxels, node superpoints, mesh labels,
read back by the training dataset."""

from __future__ import annotations

import json

import numpy as np
import pytest

from training.generate_synthetic import main as generate
from uniseg3d_model.data.dataset import ScanNetDataset
from uniseg3d_model.data.labels import IGNORE_INDEX, SCANNET20_CLASSES
from uniseg3d_model.data.scannet import PROCESSED_KEYS, load_processed
from uniseg3d_model.superpoints import segment_points
from uniseg3d_model.synthetic.scene import SceneConfig, generate_scene
from uniseg3d_ros.inference.engine import EngineConfig
from uniseg3d_ros.node.params import NodeParams
from uniseg3d_ros.tools.fused_scene import FuseConfig, fused_sample

TINY = FuseConfig(frames=6, width=96, height=72)


@pytest.fixture(scope="module")
def room():
    scene = generate_scene(11, "scene0011_00", SceneConfig(spacing=0.08), room_type="bedroom")
    return scene, fused_sample(scene, TINY)


def test_fused_room_is_the_node_map_of_the_rendered_frames(room):
    scene, s = room
    assert set(s) == set(PROCESSED_KEYS)
    pts = s["points"]
    assert pts.dtype == np.float32 and len(pts) > 2000
    assert TINY.voxel_size == NodeParams().voxel_size and TINY.depth_stride == NodeParams().depth_stride
    keys = np.floor(pts / TINY.voxel_size).astype(np.int64)  # one averaged point per node voxel
    assert len(np.unique(keys, axis=0)) == len(pts)
    lo, hi = scene.vertices.min(0), scene.vertices.max(0)
    assert np.all(pts >= lo - 0.05) and np.all(pts <= hi + 0.05)  # map frame = the room's frame
    assert s["colors"].min() >= 0 and s["colors"].max() <= 1


def test_superpoints_are_the_node_segmentation_of_the_fused_points(room):
    _, s = room
    # exactly the engine's call: the node's superpoint settings, not segment_points' defaults
    kwargs = EngineConfig().superpoint_kwargs
    expected = np.asarray(segment_points(s["points"], s["colors"], **kwargs), np.int64)
    assert np.array_equal(s["superpoints"], expected)


def test_labels_come_from_the_nearest_mesh_vertex(room):
    scene, s = room
    from scipy.spatial import cKDTree

    dist, idx = cKDTree(scene.vertices).query(s["points"])
    inst = s["instance"]
    assert len(s["instance_object_id"]) >= 3
    for k, oid in enumerate(s["instance_object_id"]):
        mask = inst == k
        assert mask.sum() > 0
        assert np.all(scene.instance[idx[mask]] == oid)  # every point of instance k is on object oid
        obj = scene.object(int(oid))
        assert obj.raw_category not in ("wall", "floor")
        assert s["instance_class"][k] in (obj.scannet20, IGNORE_INDEX)
    floor = SCANNET20_CLASSES.index("floor")
    on_floor = s["semantic20"] == floor
    assert on_floor.mean() > 0.1 and np.all(inst[on_floor] == IGNORE_INDEX)
    far = dist > TINY.transfer_radius
    assert np.all(s["semantic20"][far] == IGNORE_INDEX)


def test_generate_fused_out_writes_samples_the_training_dataset_reads(tmp_path):
    fused = tmp_path / "fused"
    args = ["--out", str(tmp_path / "raw"), "--num-scenes", "2", "--seed", "3", "--spacing", "0.1",
            "--val-fraction", "0.5", "--fused-out", str(fused), "--fused-frames", "4", "--width", "64",
            "--height", "48", "--no-progress"]
    assert generate(args) == 0
    assert [p.name for p in (fused / "train").glob("*.npz")] == ["scene0000_00.npz"]
    assert [p.name for p in (fused / "val").glob("*.npz")] == ["scene0001_00.npz"]
    refer = json.loads((fused / "train_referring.json").read_text())
    data = load_processed(fused / "train" / "scene0000_00.npz")
    ds = ScanNetDataset(fused, "train", num_clicks=4, num_texts=4)
    sample = ds[0]
    assert len(sample.points) == len(data["points"]) and len(sample.instance_class) > 0
    assert len(sample.clicks) > 0
    for e in refer:  # every sentence names a fused instance of its object
        assert data["instance_object_id"][e["instance"]] == e["object_id"]
    assert len(sample.texts) == min(4, len(refer))


def test_a_second_generate_run_adds_rooms_to_a_fused_folder(tmp_path, capsys):
    fused = tmp_path / "fused"
    common = ["--num-scenes", "1", "--spacing", "0.1", "--val-fraction", "0", "--fused-out", str(fused),
              "--fused-frames", "4", "--width", "64", "--height", "48", "--no-progress"]
    assert generate(["--out", str(tmp_path / "a"), "--seed", "3", *common]) == 0
    first = json.loads((fused / "train_referring.json").read_text())
    assert generate(["--out", str(tmp_path / "b"), "--seed", "4", "--start-index", "1", *common]) == 0
    both = json.loads((fused / "train_referring.json").read_text())
    assert {e["scene_id"] for e in both} == {"scene0000_00", "scene0001_00"}
    assert [e for e in both if e["scene_id"] == "scene0000_00"] == first  # kept as it was
    assert sorted(p.name for p in (fused / "train").glob("*.npz")) == ["scene0000_00.npz", "scene0001_00.npz"]
    assert len(ScanNetDataset(fused, "train", num_texts=4)) == 2
    # the same rooms again replace their own sentences, not add a second copy
    assert generate(["--out", str(tmp_path / "b"), "--seed", "4", "--start-index", "1", *common]) == 0
    assert json.loads((fused / "train_referring.json").read_text()) == both
    (fused / "train_referring.json").write_text("[{]")  # a file it cannot extend: one line, exit 2
    assert generate(["--out", str(tmp_path / "c"), "--seed", "5", "--start-index", "2", *common]) == 2
    err = capsys.readouterr().err
    assert "--fused-out" in err and "malformed JSON" in err and "Traceback" not in err


def test_generate_rejects_zero_fused_frames(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        generate(["--out", str(tmp_path), "--num-scenes", "1", "--fused-out", str(tmp_path / "f"),
                  "--fused-frames", "0"])
    assert exc.value.code == 2 and "--fused-frames" in capsys.readouterr().err
