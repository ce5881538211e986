"""Lays out a demo figure with matplotlib (Agg backend, no display): a wrapped title, one heading
per column, the cropped renders at their native pixel size (2 rows x columns), instance labels at
their centroids (moved apart when they would overlap, with a thin line back to the centroid),
click markers as stars, and a legend of colour -> name below.

The canvas is sized in pixels from the renders, so nothing is rescaled and no margin is wasted;
the result is written with :func:`uniseg3d_ros.tools.render.write_png` (8-bit RGB PNG).
"""

from __future__ import annotations

import io
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from uniseg3d_ros.tools.render import write_png

if TYPE_CHECKING:
    from uniseg3d_ros.tools.demo.figures import View

DPI = 100
GAP = 8  # px between renders
TITLE_PX = 17  # px per title line
HEAD_PX = 16  # px of a column heading
LEGEND_ROW_PX = 17
MARKER = (1.0, 0.84, 0.0)  # gold
STAR_PX = 22  # a 16 pt star marker, in px


def _clamp(p: tuple[float, float], lo: tuple[float, float], hi: tuple[float, float]) -> tuple[float, float]:
    return min(max(p[0], lo[0]), hi[0]), min(max(p[1], lo[1]), hi[1])


def place_labels(
    anchors: list[tuple[float, float]],
    sizes: list[tuple[float, float]],
    width: float,
    height: float,
    obstacles: list[tuple[float, float, float, float]] = (),
) -> list[tuple[float, float]]:
    """Centres for label boxes of ``sizes`` (w, h) px wanted at ``anchors`` (u, v) in a
    ``width`` x ``height`` image: each box stays inside the image and, in the order given (first
    = most important), takes the free spot nearest its anchor among steps of its own height up
    and down (and half its width sideways), so no two boxes overlap while any such spot is free;
    a box that finds none keeps its clamped anchor. ``obstacles`` (x0, y0, x1, y1): areas to keep
    clear (the click markers)."""
    placed: list[tuple[float, float, float, float]] = list(obstacles)  # x0, y0, x1, y1
    centres = []
    for (u, v), (bw, bh) in zip(anchors, sizes):
        lo, hi = (bw / 2, bh / 2), (max(width - bw / 2, bw / 2), max(height - bh / 2, bh / 2))
        candidates = sorted(
            {_clamp((u + i * bw / 2, v + j * (bh + 1)), lo, hi) for j in range(-6, 7) for i in (-1, 0, 1)},
            key=lambda c: (abs(c[1] - v) + abs(c[0] - u) / 2, c[1], c[0]),
        )
        best = _clamp((u, v), lo, hi)
        for x, y in candidates:
            box = (x - bw / 2, y - bh / 2, x + bw / 2, y + bh / 2)
            if all(box[2] <= q[0] or q[2] <= box[0] or box[3] <= q[1] or q[3] <= box[1] for q in placed):
                best = (x, y)
                break
        placed.append((best[0] - bw / 2, best[1] - bh / 2, best[0] + bw / 2, best[1] + bh / 2))
        centres.append(best)
    return centres


def _rgb(color: np.ndarray) -> tuple[float, float, float]:
    c = np.asarray(color, np.float64).reshape(3) / 255.0
    return float(c[0]), float(c[1]), float(c[2])


def draw_figure(
    path: Path,
    title: str,
    headings: list[str],
    views: list[list[View]],
    legend: list[tuple[str, np.ndarray]],
) -> Path:
    """Write the figure to ``path``. ``views[row][column]``: cropped renders with label / marker
    pixel positions; ``headings``: one per column; ``legend``: (name, (3,) uint8 colour)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    cols = len(headings)
    col_w = [max(views[r][c].image.shape[1] for r in range(len(views))) for c in range(cols)]
    row_h = [max(v.image.shape[0] for v in row) for row in views]
    width = sum(col_w) + GAP * (cols + 1)
    chars = max(40, int(width / 9.0))  # ~9 px per bold character at 11 pt
    title_lines = textwrap.wrap(title, chars) or [""]
    legend_cols = max(1, min(len(legend), width // 170))
    legend_rows = -(-len(legend) // legend_cols) if legend else 0
    top = GAP + TITLE_PX * len(title_lines) + HEAD_PX
    bottom = LEGEND_ROW_PX * legend_rows + (2 * GAP if legend else GAP)
    height = top + sum(row_h) + GAP * (len(row_h) - 1) + bottom

    fig = Figure(figsize=(width / DPI, height / DPI), dpi=DPI, facecolor="white")
    FigureCanvasAgg(fig)  # a renderer to measure the labels with
    fig.text(0.5, 1 - GAP / 2 / height, "\n".join(title_lines), ha="center", va="top", fontsize=11,
             fontweight="bold", linespacing=1.15)
    x = GAP
    for c in range(cols):
        fig.text((x + col_w[c] / 2) / width, 1 - (top - 3) / height, headings[c], ha="center",
                 va="bottom", fontsize=10)
        y = top
        for r, row in enumerate(views):
            v = row[c]
            h, w = v.image.shape[:2]
            ax = fig.add_axes((x / width, 1 - (y + h) / height, w / width, h / height))
            ax.imshow(v.image, interpolation="nearest")
            ax.set_xlim(-0.5, w - 0.5)
            ax.set_ylim(h - 0.5, -0.5)
            ax.axis("off")
            half = STAR_PX / 2
            stars = [(u - half, vv - half, u + half, vv + half) for u, vv in v.markers]
            _draw_labels(ax, [lab for lab in v.labels if 0 <= lab[0] < w and 0 <= lab[1] < h], w, h, stars)
            for u, vv in v.markers:
                ax.plot([u], [vv], marker="*", markersize=16, mfc=MARKER, mec="black", mew=1.0, ls="none",
                        zorder=10)
            y += row_h[r] + GAP
        x += col_w[c] + GAP
    if legend:
        handles = [
            Patch(facecolor=_rgb(color), edgecolor="black", lw=0.5, label=name) for name, color in legend
        ]
        fig.legend(handles=handles, loc="lower center", ncol=legend_cols, fontsize=8, frameon=False,
                   bbox_to_anchor=(0.5, GAP / 2 / height), handlelength=1.2, columnspacing=1.2)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, facecolor="white")
    buf.seek(0)
    import matplotlib.image as mpimg

    rgba = mpimg.imread(buf, format="png")
    rgb = np.round(rgba[..., :3] * 255).astype(np.uint8) if rgba.dtype != np.uint8 else rgba[..., :3]
    return write_png(path, rgb)


def _draw_labels(
    ax, labels: list[tuple[float, float, str, np.ndarray]], w: int, h: int, keep_clear: list
) -> None:
    """Instance labels at their centroids, moved apart (:func:`place_labels`) where they would
    overlap; a moved label gets a thin line in its colour back to its centroid."""
    texts = [
        ax.text(u, v, text, fontsize=7, ha="center", va="center", color="black", zorder=5,
                bbox=dict(boxstyle="round,pad=0.15", fc=(1, 1, 1, 0.8), ec=_rgb(color), lw=1.2))
        for u, v, text, color in labels
    ]
    if not texts:
        return
    renderer = ax.figure.canvas.get_renderer()
    scale = w / ax.get_window_extent(renderer).width  # image px per display px (1 here: native size)
    sizes = []
    for t in texts:
        ext = t.get_window_extent(renderer)
        pad = 2 * 0.15 * t.get_fontsize() * ax.figure.dpi / 72 + 2.4  # the box's pad and edge
        sizes.append(((ext.width + pad) * scale, (ext.height + pad) * scale))
    centres = place_labels([(u, v) for u, v, _, _ in labels], sizes, w, h, keep_clear)
    for t, (u, v, _, color), (x, y) in zip(texts, labels, centres):
        t.set_position((x, y))
        if abs(x - u) > 1 or abs(y - v) > 1:
            ax.plot([u, x], [v, y], color=_rgb(color), lw=0.8, zorder=4)
