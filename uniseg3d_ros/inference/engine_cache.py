"""The engine's cache entries and the exceptions of its concurrency protocol (see
:class:`uniseg3d_ros.inference.engine.InferenceEngine`): one :class:`_Prepared` per map version,
built by one thread and published by one assignment; :class:`PrivateEntry` slots for a thread's
own entries (tiles); :class:`EncodingBusy` for light queries that must not wait; :class:`Cancelled`
for a ``progress`` callback that stops a run between stages.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

#: vocabularies whose open-vocabulary instances one map version keeps
VOCAB_CACHE = 8


class Cancelled(Exception):  # noqa: N818 - reads as what happened: the run was cancelled
    """Raised by a ``progress`` callback to stop a run between stages (the engine stays consistent)."""


@dataclass
class _Prepared:
    version: int
    scene: Any  # SceneSample without prompts
    encodings: list[Any]
    tree: Any  # scipy cKDTree over scene points, built lazily
    base_out: Any = None  # decoder output without prompts (segment), built lazily
    semantic: Any = None  # (N,) int64 semantic argmax of base_out
    vocab_preds: dict = field(default_factory=dict)  # open-vocab InstancePrediction per (vocab, threshold)
    vocab_results: dict = field(default_factory=dict)  # instance lists per (vocabulary, threshold, cap)


class PrivateEntry:
    """A cache slot of one thread (see :meth:`InferenceEngine.private`): queries of that thread build
    into and read from ``entry`` instead of the shared cache (a tile of a larger map, say)."""

    def __init__(self, entry: _Prepared | None = None) -> None:
        self.entry = entry


class EncodingBusy(Exception):
    """Raised to a light query while another thread builds the cache entry of a newer map."""

    def __init__(self, prep: _Prepared | None, building: tuple[int, float] | None) -> None:
        super().__init__("encoding busy")
        self.prep, self.building = prep, building

    def reason(self) -> str:
        if self.building is None:
            return "the map encoding is being rebuilt; retry shortly"
        version, age = self.building
        return f"map version {version} is being encoded ({age:.1f} s so far); retry shortly for it"


def _bounded_put(cache: dict, key: Any, value: Any) -> None:
    """Insert into a dict used as a FIFO cache of at most ``VOCAB_CACHE`` entries."""
    if key not in cache and len(cache) >= VOCAB_CACHE:
        cache.pop(next(iter(cache)))
    cache[key] = value
