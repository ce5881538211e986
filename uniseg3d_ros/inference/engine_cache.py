"""The engine's cache (:class:`EntryCache`, the base of
:class:`uniseg3d_ros.inference.engine.InferenceEngine`) and its concurrency protocol: one
:class:`_Prepared` per map version, built by one thread and published by one assignment;
:class:`PrivateEntry` slots for a thread's own entries (tiles); :class:`EncodingBusy` for light
queries that must not wait; :class:`Cancelled` for a ``progress`` callback that stops a run
between stages.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

#: the stages of a segment run, in order, reported to ``progress`` callbacks (``segment(progress=)``)
STAGES = ("superpoints", "backbone", "decoder", "postprocess")
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


class EntryCache:
    """The engine's cache of one map version's entry and its concurrency protocol; a subclass
    supplies ``_build(snapshot, version) -> _Prepared``. An entry is built completely by one thread
    under ``_build_lock`` and published by one assignment, so readers never lock; inside
    :meth:`private` a thread uses its own slot instead."""

    def __init__(self) -> None:
        self._prep: _Prepared | None = None  # the last complete entry (replaced atomically)
        self._build_lock = threading.Lock()  # one build (superpoints + encode + base decode) at a time
        self._building: tuple[int, float] | None = None  # (version, monotonic start) of that build
        # callable(stage: str, cached: bool) of the segment(progress=...) running in THIS thread
        # (light queries in other threads share the cache but never see it)
        self._local = threading.local()

    def _build(self, snapshot: Any, version: int) -> _Prepared:
        raise NotImplementedError

    def _stage(self, name: str, cached: bool = False) -> None:
        """Report the stage about to run; the callback may raise :class:`Cancelled`."""
        progress = getattr(self._local, "progress", None)
        if progress is not None:
            progress(name, cached)

    def invalidate(self) -> None:
        self._prep = None

    @contextmanager
    def private(self, entry: _Prepared | None = None) -> Iterator[PrivateEntry]:
        """Within the block, this thread's queries use a private cache slot (built there when its
        version differs from the snapshot's) and never touch the shared entry, its build lock or
        ``building``: other threads' queries see none of it. Used by the tiled engine."""
        slot = PrivateEntry(entry)
        outer = getattr(self._local, "private", None)
        self._local.private = slot
        try:
            yield slot
        finally:
            self._local.private = outer

    def _current(self) -> _Prepared | None:
        """The entry this thread reads: its private one inside :meth:`private`, else the shared one."""
        slot = getattr(self._local, "private", None)
        return self._prep if slot is None else slot.entry

    @property
    def building(self) -> tuple[int, float] | None:
        """(map version, seconds since it started) of the encoding being built, or None."""
        job = self._building
        return None if job is None else (job[0], time.monotonic() - job[1])

    def _prepare(self, snapshot: Any, wait: bool = True) -> tuple[_Prepared, bool]:
        """The complete cache entry of ``snapshot.version``: built here when missing (one build at
        a time, under ``_build_lock``). ``wait=False`` (light queries) does not queue behind another
        thread's build: it raises :class:`EncodingBusy` carrying the last finished entry instead."""
        version = int(snapshot.version)
        slot = getattr(self._local, "private", None)
        if slot is not None:  # a private slot: no shared state, no lock
            if slot.entry is not None and slot.entry.version == version:
                return self._cached(slot.entry), True
            slot.entry = self._build(snapshot, version)
            return slot.entry, False
        prep = self._prep
        if prep is not None and prep.version == version:
            return self._cached(prep), True
        if not self._build_lock.acquire(blocking=wait):
            raise EncodingBusy(prep, self.building)
        try:
            prep = self._prep
            if prep is not None and prep.version == version:
                return self._cached(prep), True
            self._building = (version, time.monotonic())
            prep = self._build(snapshot, version)
            self._prep = prep  # published only when complete: readers never see a partial entry
            return prep, False
        finally:
            self._building = None
            self._build_lock.release()

    def _cached(self, prep: _Prepared) -> _Prepared:
        for stage in STAGES[:-1]:  # superpoints, backbone, decoder: all built with the entry
            self._stage(stage, True)
        return prep
