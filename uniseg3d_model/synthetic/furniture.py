"""Furniture built from primitives, one builder per raw category.

Every builder takes a random generator and the mesh spacing and returns the object's parts in
its local frame: footprint centred on the origin, bottom at z = 0, front facing -y and back
at +y (the side placed against a wall). A part is ``(vertices, faces, shade)``, ``shade``
scaling the object's base colour (legs and handles are darker). Sizes are in metres.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from uniseg3d_model.synthetic.primitives import Mesh, box, cylinder

Part = tuple[np.ndarray, np.ndarray, float]
Builder = Callable[[np.random.Generator, float], list[Part]]


def _box(size: tuple[float, float, float], at: tuple[float, float, float], spacing: float,
         shade: float = 1.0) -> Part:
    """Box of ``size`` whose bottom-centre is at ``at``."""
    v, f = box(size, spacing)
    return v + np.asarray(at, dtype=np.float64), f, shade


def _cyl(radius: float, height: float, at: tuple[float, float, float], spacing: float,
         shade: float = 1.0) -> Part:
    v, f = cylinder(radius, height, spacing)
    return v + np.asarray(at, dtype=np.float64), f, shade


def _legs(w: float, d: float, h: float, thick: float, inset: float, spacing: float, round_legs: bool,
          shade: float = 0.6) -> list[Part]:
    """Four legs under a w x d top, z in [0, h]."""
    parts = []
    for sx in (-1, 1):
        for sy in (-1, 1):
            x = sx * (w / 2 - inset - thick / 2)
            y = sy * (d / 2 - inset - thick / 2)
            if round_legs:
                parts.append(_cyl(thick / 2, h, (x, y, 0.0), spacing, shade))
            else:
                parts.append(_box((thick, thick, h), (x, y, 0.0), spacing, shade))
    return parts


def _u(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(rng.uniform(lo, hi))


def chair(rng: np.random.Generator, spacing: float) -> list[Part]:
    w, d = _u(rng, 0.40, 0.52), _u(rng, 0.40, 0.50)
    seat_h, seat_t = _u(rng, 0.42, 0.48), 0.05
    back_h, back_t = _u(rng, 0.35, 0.50), 0.05
    leg = _u(rng, 0.03, 0.045)
    parts = _legs(w, d, seat_h - seat_t, leg, 0.01, spacing, bool(rng.random() < 0.4))
    parts.append(_box((w, d, seat_t), (0, 0, seat_h - seat_t), spacing))
    parts.append(_box((w, back_t, back_h), (0, d / 2 - back_t / 2, seat_h), spacing))
    return parts


def office_chair(rng: np.random.Generator, spacing: float) -> list[Part]:
    w, d = _u(rng, 0.50, 0.60), _u(rng, 0.48, 0.58)
    seat_h = _u(rng, 0.45, 0.52)
    base_r = min(w, d) / 2
    parts = [
        _cyl(base_r * 0.9, 0.06, (0, 0, 0.0), spacing, 0.4),
        _cyl(0.03, seat_h - 0.14, (0, 0, 0.06), spacing, 0.4),
        _box((w, d, 0.08), (0, 0, seat_h - 0.08), spacing),
        _box((w * 0.9, 0.06, _u(rng, 0.45, 0.6)), (0, d / 2 - 0.03, seat_h), spacing),
    ]
    return parts


def armchair(rng: np.random.Generator, spacing: float) -> list[Part]:
    w, d = _u(rng, 0.75, 0.95), _u(rng, 0.75, 0.9)
    base_h, arm_w = _u(rng, 0.38, 0.45), 0.14
    back_t = 0.16
    return [
        _box((w, d, base_h), (0, 0, 0), spacing),
        _box((w, back_t, _u(rng, 0.35, 0.45)), (0, d / 2 - back_t / 2, base_h), spacing),
        _box((arm_w, d - back_t, 0.2), (-w / 2 + arm_w / 2, -back_t / 2, base_h), spacing),
        _box((arm_w, d - back_t, 0.2), (w / 2 - arm_w / 2, -back_t / 2, base_h), spacing),
    ]


def couch(rng: np.random.Generator, spacing: float) -> list[Part]:
    w, d = _u(rng, 1.6, 2.4), _u(rng, 0.8, 0.95)
    base_h, arm_w, back_t = _u(rng, 0.38, 0.45), _u(rng, 0.15, 0.22), 0.2
    parts = [
        _box((w, d, base_h), (0, 0, 0), spacing, 0.85),
        _box((w, back_t, _u(rng, 0.35, 0.45)), (0, d / 2 - back_t / 2, base_h), spacing),
        _box((arm_w, d - back_t, 0.22), (-w / 2 + arm_w / 2, -back_t / 2, base_h), spacing),
        _box((arm_w, d - back_t, 0.22), (w / 2 - arm_w / 2, -back_t / 2, base_h), spacing),
    ]
    n_cushions = 2 if w < 2.0 else 3
    cw = (w - 2 * arm_w) / n_cushions
    for i in range(n_cushions):
        x = -w / 2 + arm_w + cw * (i + 0.5)
        parts.append(_box((cw - 0.01, d - back_t - 0.02, 0.1), (x, -back_t / 2, base_h), spacing))
    return parts


def _table_like(rng: np.random.Generator, spacing: float, w: float, d: float, h: float) -> list[Part]:
    top_t = _u(rng, 0.03, 0.05)
    parts = _legs(w, d, h - top_t, _u(rng, 0.04, 0.07), 0.03, spacing, bool(rng.random() < 0.5))
    parts.append(_box((w, d, top_t), (0, 0, h - top_t), spacing))
    return parts


def table(rng: np.random.Generator, spacing: float) -> list[Part]:
    return _table_like(rng, spacing, _u(rng, 0.8, 1.6), _u(rng, 0.6, 0.9), _u(rng, 0.70, 0.78))


def dining_table(rng: np.random.Generator, spacing: float) -> list[Part]:
    return _table_like(rng, spacing, _u(rng, 1.4, 2.0), _u(rng, 0.8, 1.0), _u(rng, 0.72, 0.78))


def coffee_table(rng: np.random.Generator, spacing: float) -> list[Part]:
    return _table_like(rng, spacing, _u(rng, 0.8, 1.2), _u(rng, 0.45, 0.65), _u(rng, 0.38, 0.48))


def desk(rng: np.random.Generator, spacing: float) -> list[Part]:
    w, d, h = _u(rng, 1.1, 1.6), _u(rng, 0.6, 0.8), _u(rng, 0.72, 0.78)
    top_t, panel = 0.04, 0.04
    drawer_w = _u(rng, 0.35, 0.45)
    return [
        _box((w, d, top_t), (0, 0, h - top_t), spacing),
        _box((panel, d, h - top_t), (-w / 2 + panel / 2, 0, 0), spacing),
        _box((drawer_w, d, h - top_t), (w / 2 - drawer_w / 2, 0, 0), spacing, 0.9),
        _box((w - panel - drawer_w, 0.02, 0.35), (-drawer_w / 2 + panel / 2, d / 2 - 0.01, h - top_t - 0.35),
             spacing),
    ]


def bed(rng: np.random.Generator, spacing: float) -> list[Part]:
    w, d = (_u(rng, 0.9, 1.1) if rng.random() < 0.4 else _u(rng, 1.4, 1.9)), _u(rng, 1.95, 2.15)
    frame_h, mattress_h = _u(rng, 0.25, 0.35), _u(rng, 0.18, 0.25)
    head_t, head_h = 0.08, _u(rng, 0.8, 1.1)
    return [
        _box((w, d - head_t, frame_h), (0, -head_t / 2, 0), spacing, 0.6),
        _box((w - 0.04, d - head_t - 0.04, mattress_h), (0, -head_t / 2, frame_h), spacing),
        _box((w, head_t, head_h), (0, d / 2 - head_t / 2, 0), spacing, 0.6),
        _box((w * 0.8, 0.35, 0.12), (0, d / 2 - head_t - 0.25, frame_h + mattress_h), spacing, 1.1),
    ]


def cabinet(rng: np.random.Generator, spacing: float, tall: bool | None = None) -> list[Part]:
    tall = bool(rng.random() < 0.4) if tall is None else tall
    w = _u(rng, 0.6, 1.2)
    d = _u(rng, 0.4, 0.6)
    h = _u(rng, 1.6, 2.1) if tall else _u(rng, 0.7, 1.0)
    n_doors = 2 if w > 0.8 else 1
    parts = [_box((w, d, h), (0, 0, 0), spacing)]
    for i in range(n_doors):
        x = -w / 2 + w * (i + 0.5) / n_doors + (0.08 if i == 0 and n_doors == 2 else -0.08) * (n_doors - 1)
        parts.append(_box((0.03, 0.03, 0.15), (x, -d / 2 - 0.03 / 2 - 0.005, h * 0.5), spacing, 0.4))
    return parts


def kitchen_cabinet(rng: np.random.Generator, spacing: float) -> list[Part]:
    return cabinet(rng, spacing, tall=False)


def file_cabinet(rng: np.random.Generator, spacing: float) -> list[Part]:
    w, d, h = _u(rng, 0.4, 0.5), _u(rng, 0.5, 0.65), _u(rng, 0.7, 1.3)
    n = max(2, int(h / 0.33))
    parts = [_box((w, d, h), (0, 0, 0), spacing)]
    for i in range(n):
        parts.append(_box((0.12, 0.03, 0.03), (0, -d / 2 - 0.02, h * (i + 0.6) / n), spacing, 0.4))
    return parts


@dataclass(frozen=True)
class ShelfFrame:
    """A bookshelf's carcass (metres, local frame): ``w`` wide, ``d`` deep, ``h`` tall, boards
    ``t`` thick, ``n_shelves`` boards from the floor up plus the top board."""

    w: float
    d: float
    h: float
    t: float
    n_shelves: int

    def compartments(self) -> list[tuple[float, float]]:
        """(floor z, ceiling z) of each space between two boards, bottom up."""
        z = [(self.h - self.t) * i / self.n_shelves for i in range(self.n_shelves)] + [self.h - self.t]
        return [(z[i] + self.t, z[i + 1]) for i in range(self.n_shelves)]


def shelf_frame(rng: np.random.Generator) -> ShelfFrame:
    w, d, h = _u(rng, 0.7, 1.2), _u(rng, 0.28, 0.4), _u(rng, 1.4, 2.1)
    return ShelfFrame(w, d, h, 0.025, int(rng.integers(3, 6)))


def shelf_parts(f: ShelfFrame, spacing: float) -> list[Part]:
    """Two sides, the back (shaded), the top and ``n_shelves`` boards; open at the front (-y)."""
    w, d, h, t = f.w, f.d, f.h, f.t
    parts = [
        _box((t, d, h), (-w / 2 + t / 2, 0, 0), spacing),
        _box((t, d, h), (w / 2 - t / 2, 0, 0), spacing),
        _box((w - 2 * t, t, h), (0, d / 2 - t / 2, 0), spacing, 0.8),
        _box((w - 2 * t, d - t, t), (0, -t / 2, h - t), spacing),
    ]
    for i in range(f.n_shelves):
        parts.append(_box((w - 2 * t, d - t, t), (0, -t / 2, (h - t) * i / f.n_shelves), spacing))
    return parts


def bookshelf(rng: np.random.Generator, spacing: float) -> list[Part]:
    """An empty bookshelf (the layout fills it: :mod:`uniseg3d_model.synthetic.shelf_books`)."""
    return shelf_parts(shelf_frame(rng), spacing)


def refrigerator(rng: np.random.Generator, spacing: float) -> list[Part]:
    w, d, h = _u(rng, 0.6, 0.85), _u(rng, 0.6, 0.75), _u(rng, 1.5, 1.9)
    return [
        _box((w, d, h), (0, 0, 0), spacing),
        _box((0.03, 0.04, 0.5), (w / 2 - 0.08, -d / 2 - 0.025, h * 0.45), spacing, 0.5),
    ]


def counter(rng: np.random.Generator, spacing: float) -> list[Part]:
    w, d, h = _u(rng, 1.2, 2.6), _u(rng, 0.58, 0.66), _u(rng, 0.88, 0.94)
    top = 0.04
    return [
        _box((w - 0.04, d - 0.05, h - top), (0, 0.025, 0), spacing, 0.8),
        _box((w, d, top), (0, 0, h - top), spacing),
    ]


def toilet(rng: np.random.Generator, spacing: float) -> list[Part]:
    tank_w, tank_d, tank_h = _u(rng, 0.38, 0.45), _u(rng, 0.16, 0.2), _u(rng, 0.7, 0.8)
    bowl_r, bowl_h = _u(rng, 0.17, 0.2), _u(rng, 0.38, 0.42)
    depth = tank_d + 2 * bowl_r + 0.05
    y_bowl = -depth / 2 + bowl_r
    return [
        _box((tank_w, tank_d, tank_h), (0, depth / 2 - tank_d / 2, 0), spacing),
        _cyl(bowl_r, bowl_h, (0, y_bowl, 0), spacing),
        _box((bowl_r * 1.2, 0.06 + 0.001, bowl_h * 0.6), (0, y_bowl + bowl_r + 0.03, 0), spacing),
    ]


def sink(rng: np.random.Generator, spacing: float) -> list[Part]:
    w, d = _u(rng, 0.45, 0.6), _u(rng, 0.38, 0.48)
    h, basin_h = _u(rng, 0.82, 0.9), 0.16
    return [
        _cyl(0.07, h - basin_h, (0, 0.05, 0), spacing, 0.9),
        _box((w, d, basin_h), (0, 0, h - basin_h), spacing),
    ]


def bathtub(rng: np.random.Generator, spacing: float) -> list[Part]:
    w, d, h, t = _u(rng, 1.5, 1.75), _u(rng, 0.7, 0.8), _u(rng, 0.5, 0.6), 0.08
    return [
        _box((w, d, 0.1), (0, 0, 0), spacing),
        _box((w, t, h - 0.1), (0, -d / 2 + t / 2, 0.1), spacing),
        _box((w, t, h - 0.1), (0, d / 2 - t / 2, 0.1), spacing),
        _box((t, d - 2 * t, h - 0.1), (-w / 2 + t / 2, 0, 0.1), spacing),
        _box((t, d - 2 * t, h - 0.1), (w / 2 - t / 2, 0, 0.1), spacing),
    ]


def trash_can(rng: np.random.Generator, spacing: float) -> list[Part]:
    return [_cyl(_u(rng, 0.13, 0.2), _u(rng, 0.35, 0.6), (0, 0, 0), spacing)]


def ottoman(rng: np.random.Generator, spacing: float) -> list[Part]:
    if rng.random() < 0.5:
        return [_cyl(_u(rng, 0.25, 0.35), _u(rng, 0.38, 0.45), (0, 0, 0), spacing)]
    return [_box((_u(rng, 0.5, 0.7), _u(rng, 0.5, 0.7), _u(rng, 0.38, 0.45)), (0, 0, 0), spacing)]


def bench(rng: np.random.Generator, spacing: float) -> list[Part]:
    w, d, h, t = _u(rng, 1.0, 1.6), _u(rng, 0.32, 0.42), _u(rng, 0.42, 0.47), 0.05
    return [
        _box((w, d, t), (0, 0, h - t), spacing),
        _box((t, d, h - t), (-w / 2 + 0.1, 0, 0), spacing, 0.7),
        _box((t, d, h - t), (w / 2 - 0.1, 0, 0), spacing, 0.7),
    ]


# Small objects standing on furniture (outside the ScanNet20 classes).
def box_item(rng: np.random.Generator, spacing: float) -> list[Part]:
    return [_box((_u(rng, 0.12, 0.4), _u(rng, 0.12, 0.35), _u(rng, 0.08, 0.3)), (0, 0, 0), spacing)]


def lamp(rng: np.random.Generator, spacing: float) -> list[Part]:
    base_r, pole_h = _u(rng, 0.07, 0.1), _u(rng, 0.25, 0.4)
    shade_r, shade_h = _u(rng, 0.1, 0.15), _u(rng, 0.12, 0.2)
    return [_cyl(base_r, 0.03, (0, 0, 0), spacing, 0.5), _cyl(0.012, pole_h, (0, 0, 0.03), spacing, 0.5),
            _cyl(shade_r, shade_h, (0, 0, 0.03 + pole_h), spacing)]


def book(rng: np.random.Generator, spacing: float) -> list[Part]:
    return [_box((_u(rng, 0.15, 0.25), _u(rng, 0.2, 0.3), _u(rng, 0.02, 0.06)), (0, 0, 0), spacing)]


# Wall-mounted and hanging objects: local bottom at z = 0, placed at a height by the layout.
def door(rng: np.random.Generator, spacing: float) -> list[Part]:
    w, h, t = _u(rng, 0.8, 0.95), _u(rng, 2.0, 2.1), _u(rng, 0.03, 0.05)
    return [
        _box((w, t, h), (0, 0, 0), spacing),
        _box((0.12, 0.05, 0.03), (w / 2 - 0.12, -t / 2 - 0.025, 1.0), spacing, 0.4),
    ]


def window(rng: np.random.Generator, spacing: float) -> list[Part]:
    w, h, f, t = _u(rng, 0.7, 1.6), _u(rng, 0.9, 1.4), 0.06, 0.06
    return [
        _box((w, 0.02, h - 2 * f), (0, t / 2 - 0.01, f), spacing, 1.15),  # pane, recessed
        _box((w, t, f), (0, 0, 0), spacing),
        _box((w, t, f), (0, 0, h - f), spacing),
        _box((f, t, h - 2 * f), (-w / 2 + f / 2, 0, f), spacing),
        _box((f, t, h - 2 * f), (w / 2 - f / 2, 0, f), spacing),
    ]


def picture(rng: np.random.Generator, spacing: float) -> list[Part]:
    w, h = _u(rng, 0.3, 1.0), _u(rng, 0.3, 0.8)
    return [_box((w, _u(rng, 0.02, 0.04), h), (0, 0, 0), spacing)]


def curtain(rng: np.random.Generator, spacing: float, width: float | None = None,
            height: float | None = None) -> list[Part]:
    """Folds: panels at alternating depths; ``width``/``height`` default to random values."""
    w = width if width is not None else _u(rng, 1.0, 2.0)
    h = height if height is not None else _u(rng, 1.6, 2.2)
    n = max(3, int(w / 0.25))
    pw = w / n
    return [_box((pw, 0.02, h), (-w / 2 + pw * (i + 0.5), 0.02 * (i % 2), 0), spacing) for i in range(n)]


def shower_curtain(rng: np.random.Generator, spacing: float, width: float | None = None) -> list[Part]:
    return curtain(rng, spacing, width=width if width is not None else _u(rng, 1.5, 1.7),
                   height=_u(rng, 1.3, 1.5))


BUILDERS: dict[str, Builder] = {
    "chair": chair, "office chair": office_chair, "armchair": armchair, "couch": couch, "table": table,
    "dining table": dining_table, "coffee table": coffee_table, "desk": desk, "bed": bed, "cabinet": cabinet,
    "kitchen cabinet": kitchen_cabinet, "file cabinet": file_cabinet, "bookshelf": bookshelf,
    "refrigerator": refrigerator, "counter": counter, "toilet": toilet, "sink": sink, "bathtub": bathtub,
    "trash can": trash_can, "ottoman": ottoman, "bench": bench, "door": door, "window": window,
    "picture": picture, "curtain": curtain, "shower curtain": shower_curtain, "box": box_item, "lamp": lamp,
    "book": book,
}


def local_mesh(parts: list[Part]) -> tuple[Mesh, np.ndarray]:
    """Concatenate parts: ``((V, 3) vertices, (F, 3) faces), (V,) shade per vertex``."""
    verts, faces, shade, off = [], [], [], 0
    for v, f, s in parts:
        verts.append(v)
        faces.append(f + off)
        shade.append(np.full(len(v), s))
        off += len(v)
    return (np.concatenate(verts), np.concatenate(faces)), np.concatenate(shade)
