"""uniseg3d_node over real rclpy on loopback: the node runs in its own process (isolated domain),
the test process publishes clouds / poses and calls the services.

With the untrained (randomly initialised) model the masks are not meaningful, so the tests check
the plumbing: map building, validation answers, caching, the geometry of every instance against
the segmented cloud and the markers, equality with the engine's direct output on the saved map,
counters for bad input, and bounded memory under a 30 Hz burst.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from uniseg3d_ros.params import PARAMETERS, NodeParams

REPO = Path(__file__).resolve().parents[1]
NODE = "/uniseg3d_node"


# ----------------------------------------------------------------------------- pure (no ROS)
def test_params_yaml_mirrors_declared_defaults():
    data = yaml.safe_load((REPO / "launch/config/params.yaml").read_text())
    values = data["uniseg3d_node"]["ros__parameters"]
    assert values == {p.name: p.default for p in PARAMETERS}


def test_node_params_dataclass_defaults_equal_the_specs():
    assert NodeParams().as_dict() == {p.name: p.default for p in PARAMETERS}


def test_params_validation_names_the_parameter():
    with pytest.raises(ValueError, match="input_mode"):
        NodeParams.from_mapping({"input_mode": "lidar"})
    with pytest.raises(ValueError, match="voxel_size"):
        NodeParams.from_mapping({"voxel_size": -1.0})
    with pytest.raises(ValueError, match="max_voxels"):
        NodeParams.from_mapping({"max_voxels": "many"})
    with pytest.raises(ValueError, match="unknown parameter"):
        NodeParams.from_mapping({"voxelsize": 0.1})
    assert NodeParams.from_mapping({"voxel_size": 1, "top_k": 3.0}).voxel_size == 1.0


def test_launch_file_and_rviz_config_reference_the_node_and_displays():
    launch = (REPO / "launch/perception.launch.py").read_text()
    compile(launch, "perception.launch.py", "exec")
    assert "uniseg3d_node" in launch and "params.yaml" in launch
    rviz = yaml.safe_load((REPO / "launch/uniseg3d.rviz").read_text())
    displays = rviz["Visualization Manager"]["Displays"]
    classes = {d["Class"] for d in displays}
    assert {"rviz_default_plugins/MarkerArray", "rviz_default_plugins/PointCloud2"} <= classes
    assert rviz["Visualization Manager"]["Global Options"]["Fixed Frame"] == "map"
    topics = {d.get("Topic", {}).get("Value") for d in displays}
    assert {f"{NODE}/markers", f"{NODE}/segmented_cloud", f"{NODE}/map_cloud"} <= topics
