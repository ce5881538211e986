"""The demo's figures: the node's answers next to ground truth, as annotated PNG point renders.

Every figure is a 2 x 2 grid: top row the top-down view, bottom row a perspective view from above
a room corner; left column the node's answer, right column the ground truth. Above the grid a
title says what was asked (the sentence, the class list, the click coordinates) and how the answer
scored; below it a legend names every colour. Instances carry their label at their centroid and a
click is drawn as a star. The panoptic figure colours each predicted instance by its OWN predicted
class (ground truth by the true class, same colour per class), so a table called "chair" shows up
in the chair colour. Renders are cropped to what they show (no empty canvas).

The point renders are pure numpy (:mod:`uniseg3d_ros.tools.render`); text, legend and markers are
drawn with matplotlib (Agg, no display) by :mod:`uniseg3d_ros.tools.demo.annotate`.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from uniseg3d_model.data.labels import SCANNET20_CLASSES
from uniseg3d_ros.tools.render import (
    default_perspective_pose,
    project_perspective,
    project_top_down,
    render_perspective,
    render_top_down,
)

ANSWER = np.array([220, 40, 40], np.uint8)
TRUTH = np.array([40, 170, 60], np.uint8)
UNKNOWN = np.array([150, 150, 150], np.uint8)
STUFF = {"wall": np.array([205, 200, 190], np.uint8), "floor": np.array([120, 112, 100], np.uint8)}
RADIUS = 1  # splat half-size [px]
PERSP_FOV = 60.0


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


_CLASS_PALETTE = palette(len(SCANNET20_CLASSES) + 64)


def class_color(name: str) -> np.ndarray:
    """(3,) uint8 colour of a class name: wall / floor light and dark grey-beige, the ScanNet20
    classes fixed colours, any other name (open-vocabulary words) a colour hashed from its text."""
    key = name.strip().lower()
    if key in STUFF:
        return STUFF[key]
    if key in SCANNET20_CLASSES:
        return _CLASS_PALETTE[SCANNET20_CLASSES.index(key)]
    return _CLASS_PALETTE[len(SCANNET20_CLASSES) + zlib.crc32(key.encode()) % 64]


def grey_map(colors: np.ndarray) -> np.ndarray:
    """(N, 3) float [0, 1] map colours -> light greys (uint8) that keep the shading."""
    lum = np.asarray(colors, np.float64) @ np.array([0.299, 0.587, 0.114])
    return np.repeat(np.round(150 + 80 * lum)[:, None], 3, axis=1).astype(np.uint8)


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


def content_box(*index_maps: np.ndarray, margin: int = 4) -> tuple[int, int, int, int]:
    """(row0, row1, col0, col1) bounding the drawn pixels (index >= 0) of equally sized maps, with
    ``margin`` pixels around, clipped to the image; the whole image when nothing is drawn."""
    drawn = np.zeros(index_maps[0].shape, bool)
    for m in index_maps:
        drawn |= m >= 0
    h, w = drawn.shape
    if not drawn.any():
        return 0, h, 0, w
    rows, cols = np.flatnonzero(drawn.any(1)), np.flatnonzero(drawn.any(0))
    return (max(0, rows[0] - margin), min(h, rows[-1] + 1 + margin),
            max(0, cols[0] - margin), min(w, cols[-1] + 1 + margin))


@dataclass
class Label:
    """Text drawn at the centroid of the ``mask`` (N,) bool points, framed in ``color`` (3,) uint8."""

    mask: np.ndarray
    text: str
    color: np.ndarray
    offset: float = 0.0  # rows [px] to move the text down (negative: up, e.g. off a click marker)


@dataclass
class Panel:
    """One column of a figure: ``colors`` (N, 3) uint8 per map point, an optional ``highlight``
    (N,) bool drawn above everything in the top-down view, and instance ``labels``."""

    title: str
    colors: np.ndarray
    highlight: np.ndarray | None = None
    labels: list[Label] = field(default_factory=list)


@dataclass
class View:
    """A cropped render: ``image`` (H, W, 3) uint8 and the crop's (row0, col0) in the full render."""

    image: np.ndarray
    origin: tuple[int, int]
    labels: list[tuple[float, float, str, np.ndarray]]  # (column, row, text, colour) in the crop
    markers: list[tuple[float, float]]


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
        self.pose = default_perspective_pose(self.points)
        self.persp_size = (size * 4 // 3, size)
        persp = render_perspective(
            self.points[keep], index_colors(len(keep)), self.pose, *self.persp_size, PERSP_FOV, RADIUS
        )
        idx = decode_indices(persp)
        self.persp = np.where(idx >= 0, keep[np.maximum(idx, 0)], -1)

    def _top_indices(self, subset: np.ndarray) -> np.ndarray:
        image = render_top_down(
            self.points[subset], index_colors(len(subset)), size=self.size, radius=RADIUS, bounds=self.bounds
        )
        idx = decode_indices(image)
        return np.where(idx >= 0, subset[np.maximum(idx, 0)], -1)

    def project(self, xyz: np.ndarray, view: str) -> tuple[float, float] | None:
        """(column, row) of map point ``xyz`` (3,) in the full ``view`` ('top' / 'persp') render;
        None when behind the perspective camera."""
        p = np.asarray(xyz, np.float64).reshape(1, 3)
        if view == "top":
            u, v = project_top_down(p, self.size, RADIUS, self.bounds)
            return float(u[0]), float(v[0])
        u, v, depth = project_perspective(p, self.pose, *self.persp_size, PERSP_FOV)
        return (float(u[0]), float(v[0])) if depth[0] > 1e-3 else None

    def panel_maps(self, panel: Panel) -> tuple[np.ndarray, np.ndarray]:
        """(top, perspective) index maps of ``panel`` (the highlight drawn above in the top view)."""
        top = self.top
        if panel.highlight is not None and panel.highlight.any():
            above = self._top_indices(np.flatnonzero(panel.highlight))
            top = np.where(above >= 0, above, top)
        return top, self.persp

    def views(self, panels: list[Panel], markers: list[np.ndarray] | None = None) -> list[list[View]]:
        """Cropped views [row: top, perspective][column: panel] with label and marker positions;
        each row shares one crop so the columns line up."""
        maps = [self.panel_maps(p) for p in panels]
        rows = []
        for r, view in enumerate(("top", "persp")):
            r0, r1, c0, c1 = content_box(*[m[r] for m in maps])
            row = []
            for panel, m in zip(panels, maps):
                image = compose(m[r], panel.colors)[r0:r1, c0:c1]
                labels = []
                for lab in panel.labels:
                    if not np.any(lab.mask):
                        continue
                    at = self.project(self.points[np.asarray(lab.mask, bool)].mean(0), view)
                    if at is not None:
                        labels.append((at[0] - c0, at[1] - r0 + lab.offset, lab.text, lab.color))
                marks = [self.project(x, view) for x in (markers or [])]
                marks = [(a[0] - c0, a[1] - r0) for a in marks if a is not None]
                row.append(View(image, (r0, c0), labels, marks))
            rows.append(row)
        return rows

    def figure(
        self,
        name: str,
        title: str,
        panels: list[Panel],
        legend: list[tuple[str, np.ndarray]],
        markers: list[np.ndarray] | None = None,
    ) -> Path:
        """Write the annotated figure ``name`` (PNG) under ``out_dir``; returns its path."""
        from uniseg3d_ros.tools.demo.annotate import draw_figure

        return draw_figure(
            self.out_dir / name, title, [p.title for p in panels], self.views(panels, markers), legend
        )

    # ----------------------------------------------------------------- the demo's kinds of figure
    def mask_figure(
        self,
        answer: np.ndarray,
        truth: np.ndarray,
        name: str,
        title: str = "",
        answer_text: str = "answer",
        truth_text: str = "ground truth",
        markers: list[np.ndarray] | None = None,
    ) -> Path:
        """Grey map, ``answer`` (N,) bool in red on the left, ``truth`` (N,) bool in green on the
        right, each labelled at its centroid; ``markers`` (3,) map points drawn as stars."""
        left, right = self.grey.copy(), self.grey.copy()
        left[answer] = ANSWER
        right[truth] = TRUTH
        shift = -20.0 if markers else 0.0  # keep the text off the click star
        panels = [
            Panel("node's answer", left, answer, [Label(answer, answer_text, ANSWER, shift)]),
            Panel("ground truth", right, truth, [Label(truth, truth_text, TRUTH, shift)]),
        ]
        legend = [(f"answer: {answer_text}", ANSWER), (f"ground truth: {truth_text}", TRUTH)]
        if markers:
            legend.append(("click", np.array([255, 215, 0], np.uint8)))
        return self.figure(name, title, panels, legend, markers)

    def class_masks_figure(
        self,
        answers: list[tuple[np.ndarray, str, str]],
        truths: list[tuple[np.ndarray, str, str]],
        name: str,
        title: str = "",
        background: tuple[np.ndarray, np.ndarray] | None = None,
        titles: tuple[str, str] = ("node's answer", "ground truth"),
    ) -> Path:
        """Masks coloured by class: ``answers`` / ``truths`` are (mask (N,) bool, class name, label
        text) drawn in :func:`class_color` of the class, labelled at their centroids, answers left,
        truths right. ``background``: (left, right) (N, 3) uint8 colours under the masks (default the
        grey map). The legend names every class drawn."""
        left, right = (self.grey.copy(), self.grey.copy()) if background is None else background
        left, right = left.copy(), right.copy()
        panels = []
        classes: dict[str, np.ndarray] = {}
        for colors, items, head in ((left, answers, titles[0]), (right, truths, titles[1])):
            labels, drawn = [], np.zeros(len(self.points), bool)
            for k, (mask, cls, text) in enumerate(items):
                color = class_color(cls)
                shade = color if k % 2 == 0 else np.round(color * 0.8).astype(np.uint8)  # neighbours differ
                colors[mask] = shade
                drawn |= mask
                labels.append(Label(mask, text, color))
                classes.setdefault(cls, color)
            panels.append(Panel(head, colors, drawn if background is None else None, labels))
        legend = sorted(classes.items())
        if background is not None:  # the panels show wall / floor in their class colours too
            legend += [(cls, color) for cls, color in STUFF.items() if cls not in classes]
        return self.figure(name, title, panels, legend)


def stuff_colors(semantic: np.ndarray, class_names: list[str], grey: np.ndarray) -> np.ndarray:
    """(N, 3) uint8 background of a panoptic panel: points whose ``semantic`` (N,) class index into
    ``class_names`` is wall / floor in that class colour, every other point ``grey`` (N, 3) uint8."""
    out = grey.copy()
    semantic = np.asarray(semantic)
    for cls, color in STUFF.items():
        if cls in class_names:
            out[semantic == class_names.index(cls)] = color
    return out
