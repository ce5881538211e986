"""Start-up check: is a node with our fully qualified name already in the ROS graph?

Two nodes with one name both serve ``~/segment`` etc.; clients then get answers from either at
random. Discovery of the other node takes a moment, so :func:`find_namesake` polls the graph (rmw
keeps it up to date in the background; no spinning needed) until ``seconds`` after ``since``.
"""

from __future__ import annotations

import time
from typing import Any


def count_namesakes(node: Any) -> int:
    """How many nodes in the graph have ``node``'s name and namespace (itself included)."""
    me = (node.get_name(), node.get_namespace())
    return sum(1 for pair in node.get_node_names_and_namespaces() if pair == me)


def find_namesake(node: Any, since: float, seconds: float, poll: float = 0.05) -> bool:
    """True as soon as another node with ``node``'s fully qualified name is seen, False when none
    was seen by ``since + seconds`` (``time.monotonic()`` clock)."""
    while True:
        if count_namesakes(node) > 1:
            return True
        if time.monotonic() >= since + seconds:
            return False
        time.sleep(poll)


def fully_qualified_name(node: Any) -> str:
    ns = node.get_namespace().rstrip("/")
    return f"{ns}/{node.get_name()}"
