"""Request checks shared by the plain and the tiled engine: each returns the reason a request
cannot be answered ("" when it can), worded for the service response a planner reads."""

from __future__ import annotations

from typing import Any

import numpy as np


def map_problem(snapshot: Any, min_points: int) -> str:
    """Why ``snapshot`` is too small to segment, or ""."""
    n = 0 if snapshot is None else len(snapshot.points)
    if n == 0:
        return "map is empty: no points integrated yet (publish clouds or RGB-D frames first)"
    if n < min_points:
        return f"map has only {n} points; at least {min_points} are needed"
    return ""


def score_threshold(value: float, default: float) -> tuple[float, str]:
    """(threshold to use, reason it is invalid or ""); 0 means ``default``."""
    if not np.isfinite(value) or value < 0 or value > 1:
        return default, f"score_threshold must be in [0, 1] (0 = node default), got {value}"
    return (value if value > 0 else default), ""


def text_problem(text: Any, top_k: int) -> str:
    if not isinstance(text, str) or not text.strip():
        return "text is empty: give a description such as 'the chair next to the table'"
    if top_k < 0:
        return f"top_k must be >= 0 (0 = node default), got {top_k}"
    return ""


def names_problem(names: list[str]) -> str:
    """``names`` already stripped."""
    if not names:
        return "class_names is empty: give at least one class name"
    blank = [i for i, c in enumerate(names) if not c]
    return f"class_names[{blank[0]}] is empty" if blank else ""


def clicks_problem(pts: np.ndarray, max_click_distance: float) -> str:
    """``pts`` (K, 3) float64; the distance to the map is checked by the caller."""
    if len(pts) == 0:
        return "clicks is empty: give at least one point"
    bad = np.flatnonzero(~np.isfinite(pts).all(axis=1))
    if len(bad):
        return f"clicks[{bad[0]}] is not finite: {pts[bad[0]].tolist()}"
    if max_click_distance < 0 or not np.isfinite(max_click_distance):
        return f"max_click_distance must be >= 0, got {max_click_distance}"
    return ""
