"""Python warnings (numpy's RuntimeWarnings, the map's UserWarnings) into the node's ROS logger.

Without this they go to stderr, outside ``/rosout`` and the node's log files, once per code location.
:func:`route_warnings_to_logger` replaces ``warnings.showwarning`` for the process: each cause
(category, message, file, line) is logged once as a ROS warning and counted after that.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Callable
from typing import Any


def route_warnings_to_logger(logger: Any, count: Callable[..., None] | None = None) -> Callable[[], None]:
    """Send every Python warning of this process to ``logger.warning`` once per cause; later
    occurrences only call ``count("python_warnings")``. Returns a function that restores the
    previous behaviour. All warnings are let through the filters (``always``) so that counting sees
    each one; the de-duplication happens here."""
    seen: set[tuple[str, str, str, int]] = set()
    lock = threading.Lock()
    previous_show = warnings.showwarning
    previous_filters = list(warnings.filters)
    warnings.simplefilter("always")

    def show(
        message: Any, category: type, filename: str, lineno: int, file: Any = None, line: Any = None
    ) -> None:
        key = (category.__name__, str(message), filename, lineno)
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
