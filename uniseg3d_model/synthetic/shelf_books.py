"""Books on a bookshelf's boards: rows of upright books and now and then a stack lying flat.

Real bookshelves are rarely empty, and an empty one seen in part looks like a low cabinet: the
generated camera (1.35 m, looking 25 degrees down) sees a bookshelf's lower compartments and the
board under them, the shape of a cabinet's top. Books give the compartments the look they have in
real rooms: many thin boxes of mixed colours standing against the back panel.

The books are parts of their bookshelf (its object id and label, like its boards), so ``~/refer``
"the bookshelf" and its instance mask hold the books on it. Each book has its own colour (a
:data:`uniseg3d_model.synthetic.scene.PALETTE` name and a shade), unlike the furniture parts, whose
shade scales the object's one colour. Geometry is in the bookshelf's local frame (front -y, back
+y, bottom z = 0, metres) and stays inside its carcass, so the bookshelf's bounding box, and with
it the room's layout, is the same with or without books.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from uniseg3d_model.synthetic.furniture import ShelfFrame
from uniseg3d_model.synthetic.primitives import box

#: Colours books take (names of ``scene.PALETTE``).
BOOK_COLORS: tuple[str, ...] = ("red", "green", "blue", "yellow", "orange", "brown", "black", "white", "gray",
                                "beige", "pink", "purple")


class PaintedPart(NamedTuple):
    """A part with its own colour: ``vertices`` (V, 3) float64 metres, ``faces`` (F, 3) int64
    local to the part, ``color`` a palette name, ``shade`` its brightness factor."""

    vertices: np.ndarray
    faces: np.ndarray
    color: str
    shade: float


def _book(rng: np.random.Generator, size: tuple[float, float, float], at: tuple[float, float, float],
          spacing: float) -> PaintedPart:
    v, f = box(size, spacing)
    color = BOOK_COLORS[int(rng.integers(len(BOOK_COLORS)))]
    return PaintedPart(v + np.asarray(at, dtype=np.float64), f, color, float(rng.uniform(0.55, 1.05)))


def shelf_books(frame: ShelfFrame, rng: np.random.Generator, spacing: float,
                fill: float) -> list[PaintedPart]:
    """Books for the compartments of ``frame``: each compartment holds a row with probability
    ``fill`` (in [0, 1]); a row covers 35-100 % of the width from one side, books 1.5-6 cm thick,
    16-32 cm tall (at most 90 % of the compartment's height), 14-26 cm deep against the back panel;
    a row leaving room ends, in 3 of 10, with a stack of 2-5 books lying flat."""
    if not 0.0 <= fill <= 1.0:
        raise ValueError(f"fill must be in [0, 1], got {fill}")
    x0, x1 = -frame.w / 2 + frame.t, frame.w / 2 - frame.t
    back = frame.d / 2 - frame.t - 0.005  # a few millimetres in front of the back panel
    max_depth = min(0.26, frame.d - frame.t - 0.03)
    books: list[PaintedPart] = []
    for z0, z1 in frame.compartments():
        if fill <= 0.0 or rng.random() >= fill:
            continue
        room_h = 0.9 * (z1 - z0)
        depth = float(rng.uniform(0.14, max_depth))  # a row shares its depth, give or take 2 cm
        span = (x1 - x0) * float(rng.uniform(0.35, 1.0))
        left = bool(rng.random() < 0.5)
        used = 0.0
        while True:
            thick = float(rng.uniform(0.015, 0.06))
            if used + thick > span:
                break
            height = min(float(rng.uniform(0.16, 0.32)), room_h)
            bd = depth - float(rng.uniform(0.0, 0.02))
            cx = x0 + used + thick / 2 if left else x1 - used - thick / 2
            books.append(_book(rng, (thick, bd, height), (cx, back - bd / 2, z0), spacing))
            gap = rng.uniform(0.02, 0.08) if rng.random() < 0.06 else rng.uniform(0.0, 0.004)
            used += thick + float(gap)
        free = (x1 - x0) - used
        if free > 0.3 and rng.random() < 0.3:
            width = float(rng.uniform(0.15, min(0.25, free - 0.05)))
            cx = x0 + used + 0.03 + width / 2 if left else x1 - used - 0.03 - width / 2
            z = z0
            for _ in range(int(rng.integers(2, 6))):
                thick = float(rng.uniform(0.02, 0.05))
                if z + thick > z0 + room_h:
                    break
                bd = float(rng.uniform(0.14, max_depth))
                books.append(_book(rng, (width, bd, thick), (cx, back - bd / 2, z), spacing))
                z += thick
    return books
