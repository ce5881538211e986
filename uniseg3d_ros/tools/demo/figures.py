"""The demo's figures: the node's answers next to ground truth, as PNG point renders.

Every figure is a 2 x 2 grid: top row the top-down view, bottom row a perspective view from above
a room corner; left column the node's answer, right column the ground truth. Query figures draw
the map in grey with the mask highlighted (answer red, ground truth green); the panoptic figure
colours each instance (a predicted instance takes the colour of the ground-truth object it
overlaps best, so matching objects read as the same colour) and stuff by class.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from uniseg3d_ros.tools.render import (
    default_perspective_pose,
    render_perspective,
    render_top_down,
    side_by_side,
    write_png,
)

ANSWER = np.array([220, 40, 40], np.uint8)
TRUTH = np.array([40, 170, 60], np.uint8)
UNKNOWN = np.array([150, 150, 150], np.uint8)
STUFF = {0: np.array([205, 200, 190], np.uint8), 1: np.array([120, 112, 100], np.uint8)}  # wall, floor


def palette(n: int, offset: int = 0) -> np.ndarray:
    """(n, 3) uint8 well-separated saturated colours (golden-ratio hues), deterministic."""
    h = ((np.arange(n) + offset) * 0.618033988749895) % 1.0
    s, v = 0.75, 0.9
    i = np.floor(h * 6).astype(int) % 6
    f = h * 6 - np.floor(h * 6)
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    table = np.stack(
        [
            np.select([i == k for k in range(6)], [v, q, p, p, t, v]),
            np.select([i == k for k in range(6)], [t, v, v, q, p, p]),
            np.select([i == k for k in range(6)], [p, p, t, v, v, q]),
        ],
        axis=1,
    )
    return np.round(table * 255).astype(np.uint8)


def grey_map(colors: np.ndarray) -> np.ndarray:
    """(N, 3) float [0, 1] map colours -> light greys (uint8) that keep the shading."""
    lum = np.asarray(colors, np.float64) @ np.array([0.299, 0.587, 0.114])
    return np.repeat(np.round(150 + 80 * lum)[:, None], 3, axis=1).astype(np.uint8)


def panoptic_colors(
    semantic: np.ndarray, instance: np.ndarray, instance_colors: dict[int, np.ndarray]
) -> np.ndarray:
    """(N, 3) uint8: instance colour where ``instance`` (N,) >= 0, else the stuff colour of
    ``semantic`` (N,) (wall / floor), else grey for other or unknown classes."""
    out = np.repeat(UNKNOWN[None], len(semantic), axis=0)
    for cls, color in STUFF.items():
        out[np.asarray(semantic) == cls] = color
    for iid, color in instance_colors.items():
        out[np.asarray(instance) == iid] = color
    return out


def index_colors(n: int) -> np.ndarray:
    """(n, 3) uint8 colours that encode point indices 0..n-1 (24-bit, white stays free)."""
    if n >= 0xFFFFFF:
        raise ValueError(f"at most {0xFFFFFF - 1} points can be rendered, got {n}")
    idx = np.arange(n, dtype=np.int64)
    return np.stack([(idx >> 16) & 255, (idx >> 8) & 255, idx & 255], axis=1).astype(np.uint8)


def decode_indices(image: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 render of :func:`index_colors` -> (H, W) int64 point index, -1 background."""
    im = image.astype(np.int64)
    idx = (im[..., 0] << 16) | (im[..., 1] << 8) | im[..., 2]
    return np.where(idx == 0xFFFFFF, -1, idx)


def compose(index_map: np.ndarray, colors: np.ndarray) -> np.ndarray:
    """(H, W) point indices (-1 background) + (N, 3) uint8 colours -> (H, W, 3) uint8 image."""
    out = np.full(index_map.shape + (3,), 255, np.uint8)
    hit = index_map >= 0
    out[hit] = colors[index_map[hit]]
    return out


class FigureMaker:
    """Renders figures of one map (``points`` (N, 3) float metres, ``colors`` (N, 3) float [0, 1])
    with a fixed framing, into ``out_dir``.

    The z-buffered renders are done once, as maps of which point each pixel shows (point indices
    rendered as colours); each figure then only looks up its colours, and a top-down mask is drawn
    above everything by overlaying a render of the masked points alone."""

    def __init__(self, points: np.ndarray, colors: np.ndarray, out_dir: Path, size: int = 400) -> None:
        self.points = np.asarray(points, np.float64)
        self.grey = grey_map(colors)
        self.out_dir = Path(out_dir)
        self.size = size
        self.bounds = (self.points.min(0), self.points.max(0))
        self.top = self._top_indices(np.arange(len(self.points)))
        # cutaway: the perspective camera looks over the walls at min x and min y; leave them out
        lo = self.bounds[0]
        near_wall = (self.points[:, 0] < lo[0] + 0.06) | (self.points[:, 1] < lo[1] + 0.06)
        keep = np.flatnonzero(~(near_wall & (self.points[:, 2] > lo[2] + 0.1)))
        pose = default_perspective_pose(self.points)
        persp = render_perspective(
            self.points[keep], index_colors(len(keep)), pose, width=size * 4 // 3, height=size, radius=1
        )
        idx = decode_indices(persp)
        self.persp = np.where(idx >= 0, keep[np.maximum(idx, 0)], -1)

    def _top_indices(self, subset: np.ndarray) -> np.ndarray:
        image = render_top_down(
            self.points[subset], index_colors(len(subset)), size=self.size, radius=1, bounds=self.bounds
        )
        idx = decode_indices(image)
        return np.where(idx >= 0, subset[np.maximum(idx, 0)], -1)

    def _views(
        self, colors: np.ndarray, highlight: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        top = self.top
        if highlight is not None and highlight.any():  # top-down: draw the mask above everything
            above = self._top_indices(np.flatnonzero(highlight))
            top = np.where(above >= 0, above, top)
        return compose(top, colors), compose(self.persp, colors)

    def grid(
        self,
        left: np.ndarray,
        right: np.ndarray,
        name: str,
        left_mask: np.ndarray | None = None,
        right_mask: np.ndarray | None = None,
    ) -> Path:
        """Write ``name`` with colours ``left`` / ``right`` (N, 3) uint8 for answer / truth."""
        lt, lp = self._views(left, left_mask)
        rt, rp = self._views(right, right_mask)
        top = side_by_side(lt, rt)
        bottom = side_by_side(lp, rp)
        width = max(top.shape[1], bottom.shape[1])
        rows = []
        for im in (top, bottom):
            pad = np.full((im.shape[0], width, 3), 255, np.uint8)
            pad[:, : im.shape[1]] = im
            rows.append(pad)
        image = np.concatenate([rows[0], np.full((8, width, 3), 255, np.uint8), rows[1]], axis=0)
        return write_png(self.out_dir / name, image)

    def mask_figure(self, answer: np.ndarray, truth: np.ndarray, name: str) -> Path:
        """Grey map, ``answer`` (N,) bool in red on the left, ``truth`` (N,) bool in green on the right."""
        left, right = self.grey.copy(), self.grey.copy()
        left[answer] = ANSWER
        right[truth] = TRUTH
        return self.grid(left, right, name, answer, truth)

    def colored_masks_figure(self, answers: list[np.ndarray], truths: list[np.ndarray], name: str) -> Path:
        """Several masks at once (e.g. open-vocabulary detections), answer k and truth k share
        colour k of :func:`palette`; answers left, truths right, over the grey map."""
        left, right = self.grey.copy(), self.grey.copy()
        colors = palette(max(len(answers), len(truths), 1))
        any_left, any_right = np.zeros(len(self.points), bool), np.zeros(len(self.points), bool)
        for k, m in enumerate(answers):
            left[m], any_left = colors[k], any_left | m
        for k, m in enumerate(truths):
            right[m], any_right = colors[k], any_right | m
        return self.grid(left, right, name, any_left, any_right)
