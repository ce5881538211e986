"""Python warnings (numpy's RuntimeWarnings, the map's UserWarnings) into the node's ROS logger.

Without this they go to stderr, outside ``/rosout`` and the node's log files. :func:`route_warnings_to_logger`
replaces ``warnings.showwarning`` for the process: each cause (category and code location; the text
may vary, e.g. a point count) is logged once as a ROS warning, every occurrence is counted.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Callable
from typing import Any


def route_warnings_to_logger(logger: Any, count: Callable[..., None] | None = None) -> Callable[[], None]:
    """Send Python warnings of this process to ``logger.warning`` once per cause; every occurrence
    calls ``count("python_warnings")``. Returns a function that restores the previous behaviour.
    RuntimeWarning and UserWarning (numpy's floating-point warnings, the map's) pass the filters every
    time so that they are all counted; the de-duplication happens here. Other categories keep their
    filters (DeprecationWarning stays hidden unless asked for)."""
    seen: set[tuple[str, str, int]] = set()
    lock = threading.Lock()
    previous_show = warnings.showwarning
    previous_filters = list(warnings.filters)
    for category in (RuntimeWarning, UserWarning):
        warnings.filterwarnings("always", category=category)

    def show(
        message: Any, category: type, filename: str, lineno: int, file: Any = None, line: Any = None
    ) -> None:
        key = (category.__name__, filename, lineno)
        with lock:
            first = key not in seen
            seen.add(key)
        if count is not None:
            count("python_warnings")
        if first:
            logger.warning(
                f"{category.__name__}: {message} ({filename}:{lineno}; further occurrences are only "
                "counted in ~/stats as python_warnings)"
            )

    warnings.showwarning = show

    def restore() -> None:
        warnings.showwarning = previous_show
        warnings.filters[:] = previous_filters

    return restore
