"""The launch file (compile-checked: `launch` is not installable here) declares namespace and
use_sim_time, and the RViz config follows the namespace (pure YAML rewrite)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

from uniseg3d_ros.tools.rviz_config import namespaced_rviz_config

REPO = Path(__file__).resolve().parents[1]


def _topics(tree):
    out = []
    if isinstance(tree, dict):
        if isinstance(tree.get("Topic"), dict):
            out.append(tree["Topic"]["Value"])
        for v in tree.values():
            out += _topics(v)
    elif isinstance(tree, list):
        for v in tree:
            out += _topics(v)
    return out


def test_launch_file_declares_namespace_use_sim_time_and_managed():
    source = (REPO / "launch/perception.launch.py").read_text()
    module = ast.parse(source)
    arguments = next(
        n.value for n in module.body if isinstance(n, ast.Assign) and n.targets[0].id == "ARGUMENTS"
    )
    names = {k.value for k in arguments.keys if isinstance(k, ast.Constant)}
    assert {"namespace", "use_sim_time", "managed", "rviz", "params_file"} <= names
    assert "uniseg3d_lifecycle_node" in source and "namespaced_rviz_config" in source


def test_rviz_config_topics_follow_the_namespace():
    text = (REPO / "launch/uniseg3d.rviz").read_text()
    plain = _topics(yaml.safe_load(text))
    assert "/clicked_point" in plain and "/uniseg3d_node/markers" in plain
    assert namespaced_rviz_config(text, "") == text
    moved = _topics(yaml.safe_load(namespaced_rviz_config(text, "/robot1/")))
    assert moved == ["/robot1" + t for t in plain]
    tree = yaml.safe_load(namespaced_rviz_config(text, "robot1"))
    assert tree["Visualization Manager"]["Global Options"]["Fixed Frame"] == "map"  # frames untouched


def test_rviz_config_rejects_a_bad_namespace():
    with pytest.raises(ValueError, match="namespace"):
        namespaced_rviz_config("a: 1\n", "robot 1")
