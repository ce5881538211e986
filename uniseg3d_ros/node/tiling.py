"""Which engine answers a map snapshot: the plain engine for one room, the tiled one beyond (a mixin).

A snapshot whose xy extent (longer side of its bounding box) exceeds the ``tile_above`` parameter
(0: always) is answered by a :class:`~uniseg3d_ros.inference.tiles.TiledEngine` over the node's
engine (``tile_size``, ``tile_overlap``); others by the engine itself, exactly as without tiling.
The choice is computed once per map version. Both answer the same calls with the same
:class:`QueryResult`, so every handler (services, the action, auto-segment, clicks, object naming)
asks :meth:`TilingChoice.answerer` and stays unaware of tiles. Documented in docs/ros_node.md.
"""

from __future__ import annotations

import threading
from typing import Any

from uniseg3d_ros.inference.tiles import TileConfig, TiledEngine, extent


class TilingChoice:
    """Mixed into the node class (needs ``p`` and ``engine``)."""

    _tiled: TiledEngine | None = None
    _tiling_choice: tuple[int, bool] | None = None  # (map version, tiled?)
    _tiled_lock = threading.Lock()

    def tiled_engine(self) -> TiledEngine | None:
        """The tiled engine over the current ``engine`` (made on first use; None without a model)."""
        engine = self.engine
        if engine is None:
            return None
        tiled = self._tiled
        if tiled is None or tiled.engine is not engine:
            with self._tiled_lock:
                tiled = self._tiled
                if tiled is None or tiled.engine is not engine:
                    p = self.p
                    tiled = self._tiled = TiledEngine(engine, TileConfig(tile_size=p.tile_size,
                                                                         overlap=p.tile_overlap))
        return tiled

    def is_tiled(self, snapshot: Any) -> bool:
        """Whether ``snapshot`` is answered in tiles (see the module docstring)."""
        version = int(snapshot.version)
        choice = self._tiling_choice
        if choice is None or choice[0] != version:
            above = self.p.tile_above
            choice = (version, above == 0 or extent(snapshot.points) > above)
            self._tiling_choice = choice  # one assignment: readers in other threads never lock
        return choice[1]

    def answerer(self, snapshot: Any) -> Any:
        """The engine (plain or tiled) that answers queries on ``snapshot``; None without a model."""
        if self.engine is None:
            return None
        return self.tiled_engine() if self.is_tiled(snapshot) else self.engine

    def invalidate_tiles(self) -> None:
        tiled = self._tiled
        if tiled is not None:
            tiled.invalidate()
