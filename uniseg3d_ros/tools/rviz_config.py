"""The RViz config under a namespace: every absolute topic of ``launch/uniseg3d.rviz`` (the node's
displays and the Publish Point tool's ``/clicked_point``) moved under ``/<namespace>``, so RViz
shows and clicks on the node launched with that namespace. Pure text/YAML, no ROS."""

from __future__ import annotations

from typing import Any

import yaml


def _walk(tree: Any, prefix: str) -> None:
    if isinstance(tree, dict):
        topic = tree.get("Topic")
        if isinstance(topic, dict) and isinstance(topic.get("Value"), str) and topic["Value"].startswith("/"):
            topic["Value"] = prefix + topic["Value"]
        for value in tree.values():
            _walk(value, prefix)
    elif isinstance(tree, list):
        for item in tree:
            _walk(item, prefix)


def namespaced_rviz_config(text: str, namespace: str) -> str:
    """``text`` (an .rviz YAML file) with every absolute topic moved under ``/<namespace>``;
    unchanged for an empty namespace. Raises ``ValueError`` for a namespace with characters
    outside ROS names (letters, digits, underscores, slashes)."""
    ns = namespace.strip("/")
    if not ns:
        return text
    if not all(part and (part[0].isalpha() or part[0] == "_") for part in ns.split("/")) or not all(
        c.isalnum() or c in "_/" for c in ns
    ):
        raise ValueError(f"namespace {namespace!r} is not a valid ROS namespace")
    tree = yaml.safe_load(text)
    _walk(tree, "/" + ns)
    return yaml.safe_dump(tree, sort_keys=False)
