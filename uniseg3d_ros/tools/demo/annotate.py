"""Lays out a demo figure with matplotlib (Agg backend, no display): a wrapped title, one heading
per column, the cropped renders at their native pixel size (2 rows x columns), instance labels at
their centroids, click markers as stars, and a legend of colour -> name below.

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
            for u, vv, text, color in v.labels:
                if 0 <= u < w and 0 <= vv < h:  # near an edge the text grows inwards, never cut off
                    ha = "left" if u < 0.15 * w else "right" if u > 0.85 * w else "center"
                    ax.text(u, min(max(vv, 8), h - 8), text, fontsize=7, ha=ha, va="center", color="black",
                            bbox=dict(boxstyle="round,pad=0.15", fc=(1, 1, 1, 0.8), ec=_rgb(color), lw=1.2))
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
