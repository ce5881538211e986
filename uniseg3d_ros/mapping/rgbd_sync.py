"""Match depth, color and camera_info messages by stamp, with bounded buffers. No ROS imports.

Drivers publish the three streams separately; a frame can only be fused once all three
are in. :class:`RGBDSynchronizer` keeps at most ``buffer_size`` items per stream (older
ones are evicted and counted), and emits a :class:`SyncedFrame` as soon as a depth image
has a color image and a camera_info whose stamps are within ``tolerance`` seconds of
its own. Items older than an emitted depth image are dropped too (they can no longer
match in a stream that moves forward in time).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np

STREAMS = ("depth", "color", "info")


@dataclass
class SyncedFrame:
    """One matched triple; ``stamp`` is the depth image's stamp [s]."""

    stamp: float
    depth: Any
    color: Any
    info: Any


class RGBDSynchronizer:
    """Approximate-time matcher for (depth, color, camera_info).

    ``tolerance``: max |stamp difference| to the depth stamp [s], >= 0.
    ``buffer_size``: items kept per stream, >= 1. Memory is bounded by 3 * buffer_size items.
    """

    def __init__(self, tolerance: float = 0.02, buffer_size: int = 10) -> None:
        if tolerance < 0:
            raise ValueError(f"tolerance must be >= 0, got {tolerance}")
        if buffer_size < 1:
            raise ValueError(f"buffer_size must be >= 1, got {buffer_size}")
        self.tolerance = float(tolerance)
        self.buffer_size = int(buffer_size)
        self._buffers: dict[str, deque[tuple[float, Any]]] = {s: deque() for s in STREAMS}
        #: per-stream count of items dropped without being used (evicted or stale)
        self.dropped: dict[str, int] = {s: 0 for s in STREAMS}
        self.matched = 0

    def __len__(self) -> int:
        return sum(len(b) for b in self._buffers.values())

    def add(self, stream: str, stamp: float, item: Any) -> SyncedFrame | None:
        """Buffer ``item`` of ``stream`` ('depth' | 'color' | 'info') stamped ``stamp`` [s];
        return the frame this completes, if any."""
        if stream not in self._buffers:
            raise ValueError(f"stream must be one of {STREAMS}, got {stream!r}")
        buf = self._buffers[stream]
        buf.append((float(stamp), item))
        if len(buf) > self.buffer_size:
            buf.popleft()
            self.dropped[stream] += 1
        return self._match()

    def add_depth(self, stamp: float, item: Any) -> SyncedFrame | None:
        return self.add("depth", stamp, item)

    def add_color(self, stamp: float, item: Any) -> SyncedFrame | None:
        return self.add("color", stamp, item)

    def add_info(self, stamp: float, item: Any) -> SyncedFrame | None:
        return self.add("info", stamp, item)

    def clear(self) -> None:
        for buf in self._buffers.values():
            buf.clear()

    def _nearest(self, stream: str, stamp: float) -> int | None:
        best, best_dt = None, None
        for i, (t, _) in enumerate(self._buffers[stream]):
            dt = abs(t - stamp)
            if dt <= self.tolerance and (best_dt is None or dt < best_dt):
                best, best_dt = i, dt
        return best

    def _match(self) -> SyncedFrame | None:
        # Newest depth first: a live system wants the latest complete frame.
        for depth_stamp, depth in reversed(self._buffers["depth"]):
            ci = self._nearest("color", depth_stamp)
            ii = self._nearest("info", depth_stamp)
            if ci is None or ii is None:
                continue
            color_stamp, color = self._buffers["color"][ci]
            info_stamp, info = self._buffers["info"][ii]
            self._drop_through("depth", depth_stamp)
            self._drop_through("color", color_stamp)
            self._drop_through("info", info_stamp)
            self.matched += 1
            return SyncedFrame(depth_stamp, depth, color, info)
        return None

    def _drop_through(self, stream: str, cutoff: float) -> None:
        """Remove every item of ``stream`` stamped <= ``cutoff``; all but the one used count as dropped."""
        buf = self._buffers[stream]
        keep = [(t, x) for t, x in buf if t > cutoff]
        self.dropped[stream] += len(buf) - len(keep) - 1
        buf.clear()
        buf.extend(keep)


# ----------------------------------------------------------------------------- image codecs
# sensor_msgs/Image encodings handled here -> (numpy dtype, channels)
IMAGE_ENCODINGS: dict[str, tuple[str, int]] = {
    "16UC1": ("u2", 1),
    "mono16": ("u2", 1),
    "32FC1": ("f4", 1),
    "rgb8": ("u1", 3),
    "bgr8": ("u1", 3),
    "rgba8": ("u1", 4),
    "bgra8": ("u1", 4),
    "mono8": ("u1", 1),
}


def image_to_array(msg: Any) -> np.ndarray:
    """A sensor_msgs/Image-like object (``height width encoding is_bigendian step data``) -> array.

    Depth: (H, W) uint16 (16UC1 / mono16, millimetres) or float32 (32FC1, metres).
    Color: (H, W, 3) uint8 RGB for rgb8/bgr8/rgba8/bgra8 (alpha dropped, BGR reordered), mono8 -> grey RGB.
    Raises ``ValueError`` naming the problem (unknown encoding, data shorter than step * height).
    """
    enc = str(msg.encoding)
    if enc not in IMAGE_ENCODINGS:
        raise ValueError(f"image encoding {enc!r} is not supported (supported: {sorted(IMAGE_ENCODINGS)})")
    base, ch = IMAGE_ENCODINGS[enc]
    dt = np.dtype(base).newbyteorder(">" if msg.is_bigendian else "<")
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    row = w * ch * dt.itemsize
    if step < row:
        raise ValueError(f"image step {step} is smaller than width * pixel size {row}")
    data = msg.data
    buf = np.asarray(data, np.uint8).ravel() if isinstance(data, list) else np.frombuffer(data, np.uint8)
    if buf.size < step * h:
        raise ValueError(f"image data has {buf.size} bytes, expected step * height = {step * h}")
    rows = buf[: step * h].reshape(h, step)[:, :row]
    img = np.ascontiguousarray(rows).view(dt).reshape(h, w, ch).astype(dt.newbyteorder("="))
    if ch == 1:
        return img[:, :, 0] if enc != "mono8" else np.repeat(img, 3, axis=2)
    img = img[:, :, :3]
    return img[:, :, ::-1].copy() if enc.startswith("bgr") else img


def array_to_image_fields(array: np.ndarray) -> dict[str, Any]:
    """Inverse of :func:`image_to_array` for publishing: (H, W) uint16 -> 16UC1, (H, W) float32 ->
    32FC1, (H, W, 3) uint8 -> rgb8. Returns the Image fields ``height width encoding is_bigendian
    step data`` (little endian)."""
    a = np.asarray(array)
    if a.ndim == 2 and a.dtype == np.uint16:
        enc = "16UC1"
    elif a.ndim == 2 and a.dtype == np.float32:
        enc = "32FC1"
    elif a.ndim == 3 and a.shape[2] == 3 and a.dtype == np.uint8:
        enc = "rgb8"
    else:
        raise ValueError(f"image must be (H, W) uint16/float32 or (H, W, 3) uint8, got {a.shape} {a.dtype}")
    a = np.ascontiguousarray(a, dtype=a.dtype.newbyteorder("<"))
    return {
        "height": a.shape[0],
        "width": a.shape[1],
        "encoding": enc,
        "is_bigendian": 0,
        "step": a.shape[1] * a.itemsize * (a.shape[2] if a.ndim == 3 else 1),
        "data": a.tobytes(),
    }
