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

from uniseg3d_ros.render import (
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


class FigureMaker:
    """Renders figures of one map (``points`` (N, 3) float metres, ``colors`` (N, 3) float [0, 1])
    with a fixed framing, into ``out_dir``."""

    def __init__(self, points: np.ndarray, colors: np.ndarray, out_dir: Path, size: int = 400) -> None:
        self.points = np.asarray(points, np.float64)
        self.grey = grey_map(colors)
        self.out_dir = Path(out_dir)
        self.size = size
        self.bounds = (self.points.min(0), self.points.max(0))
        self.pose = default_perspective_pose(self.points)
        # cutaway: the perspective camera looks over the walls at min x and min y; leave them out
        lo = self.bounds[0]
        near_wall = (self.points[:, 0] < lo[0] + 0.06) | (self.points[:, 1] < lo[1] + 0.06)
        self.cutaway = ~(near_wall & (self.points[:, 2] > lo[2] + 0.1))
        self.lift = np.array([0.0, 0.0, 10.0 + float(self.bounds[1][2] - self.bounds[0][2])])

    def _views(
        self, colors: np.ndarray, highlight: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        pts = self.points
        if highlight is not None and highlight.any():  # top-down: draw the mask above everything
            pts = pts + highlight[:, None] * self.lift
        lo, hi = self.bounds
        top = render_top_down(pts, colors, size=self.size, radius=1, bounds=(lo, hi))
        keep = self.cutaway
        persp = render_perspective(
            self.points[keep], colors[keep], self.pose, width=self.size * 4 // 3, height=self.size, radius=1
        )
        return top, persp

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
