"""``uniseg3d_node`` as a command: ``--help`` prints the parameters without joining a ROS graph,
and misspelled parameters are named with the closest known one instead of being ignored."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests import rosutil
from uniseg3d_ros.node.params import PARAMETERS, unknown_parameter_warnings, wants_help


def test_unknown_parameter_warning_names_the_closest_known_one():
    warnings = unknown_parameter_warnings(["voxel_sise", "voxelsize", "use_sim_time", "fixed_frame"])
    assert len(warnings) == 2  # ROS's own use_sim_time and a known name are not warned about
    assert all("did you mean 'voxel_size'" in w for w in warnings)


def test_unknown_parameter_far_from_every_name_points_to_help():
    (warning,) = unknown_parameter_warnings(["zzz_qqq"])
    assert "'zzz_qqq'" in warning and "--help" in warning


def test_qos_overrides_are_not_unknown_parameters():
    assert unknown_parameter_warnings(["qos_overrides./cloud.subscription.reliability"]) == []


@pytest.mark.parametrize(
    "argv, expected",
    [(["--help"], True), (["-h"], True), ([], False), (["--ros-args", "-p", "help:=1"], False)],
)
def test_help_flag_is_only_the_nodes_own(argv, expected):
    assert wants_help(argv) is expected


@pytest.mark.parametrize("module", ["uniseg3d_ros.node.node", "uniseg3d_ros.node.lifecycle"])
def test_help_prints_every_parameter_and_exits_without_ros(tmp_path, module):
    env = rosutil.ros_env(101)  # never joined: --help must not init ROS
    proc = subprocess.run(
        [sys.executable, "-m", module, "--help"],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: uniseg3d_node")
    for spec in PARAMETERS:
        assert f"  {spec.name} (default" in proc.stdout


@pytest.mark.ros
def test_misspelled_parameter_is_reported_by_the_running_node():
    with rosutil.ros_domain() as domain:
        env = rosutil.ros_env(domain)
        args = ["-m", "uniseg3d_ros.node.node", "--ros-args", "-p", "voxel_sise:=0.05"]
        with rosutil.start_python(args, env=env, name="typo_node") as proc:
            proc.wait_for_output("did you mean 'voxel_size'", timeout=90)
