"""Room layouts: which furniture a room type holds and where it goes, without interpenetration.

The room spans x in [0, length], y in [0, width], floor at z = 0 (map frame, metres, z up).
Walls are numbered 0: y = 0, 1: x = length, 2: y = width, 3: x = 0. Objects are built in their
local frame (back at +y) and rotated so their back faces the wall they stand against.
Each placed object's oriented bounding box must keep ``margin`` from every other box (and from
reserved space such as the swing area in front of a door), so meshes never interpenetrate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from uniseg3d_model.synthetic.furniture import (
    BUILDERS,
    Part,
    curtain,
    local_mesh,
    shelf_frame,
    shelf_parts,
    shower_curtain,
)
from uniseg3d_model.synthetic.geometry import OrientedBox, boxes_overlap
from uniseg3d_model.synthetic.primitives import rotation_z
from uniseg3d_model.synthetic.shelf_books import PaintedPart, shelf_books

#: Yaw that turns an object's back (+y local) towards wall k.
WALL_YAW = (math.pi, -math.pi / 2, 0.0, math.pi / 2)

# Room type -> entries (raw category, min count, max count, placement).
# Placements: "wall" (back against a wall), "center", "free" (any yaw), "mount:<zlo>:<zhi>" (on a
# wall, bottom height range), "seat:<n>" (chairs around the last table/desk placed).
ROOM_TYPES: dict[str, tuple[tuple[str, int, int, str], ...]] = {
    "bedroom": (
        ("door", 1, 1, "mount:0:0"), ("window", 1, 2, "mount:0.7:1.0"), ("bed", 1, 1, "wall"),
        ("cabinet", 1, 2, "wall"), ("desk", 0, 1, "wall"), ("chair", 0, 1, "seat:1"),
        ("bookshelf", 0, 1, "wall"), ("armchair", 0, 1, "free"), ("trash can", 0, 1, "free"),
        ("ottoman", 0, 1, "free"), ("picture", 1, 2, "mount:1.2:1.6"), ("curtain", 0, 2, "curtain"),
    ),
    "living room": (
        ("door", 1, 1, "mount:0:0"), ("window", 1, 3, "mount:0.6:1.0"), ("couch", 1, 2, "wall"),
        ("coffee table", 1, 1, "center"), ("table", 0, 1, "center"), ("chair", 0, 4, "seat:4"),
        ("armchair", 0, 2, "free"), ("bookshelf", 0, 2, "wall"), ("cabinet", 0, 2, "wall"),
        ("ottoman", 0, 1, "free"), ("bench", 0, 1, "wall"), ("picture", 1, 3, "mount:1.2:1.7"),
        ("curtain", 0, 2, "curtain"),
    ),
    "office": (
        ("door", 1, 1, "mount:0:0"), ("window", 1, 2, "mount:0.8:1.0"), ("desk", 1, 1, "wall"),
        ("office chair", 1, 1, "seat:1"), ("desk", 1, 2, "wall"), ("office chair", 1, 1, "seat:1"),
        ("bookshelf", 1, 2, "wall"), ("file cabinet", 1, 2, "wall"), ("cabinet", 0, 1, "wall"),
        ("table", 0, 1, "center"), ("chair", 0, 4, "seat:4"), ("couch", 0, 1, "wall"),
        ("trash can", 1, 2, "free"), ("picture", 0, 2, "mount:1.3:1.7"), ("curtain", 0, 1, "curtain"),
    ),
    "kitchen": (
        ("door", 1, 1, "mount:0:0"), ("window", 1, 1, "mount:0.95:1.1"), ("counter", 1, 2, "wall"),
        ("refrigerator", 1, 1, "wall"), ("kitchen cabinet", 1, 3, "wall"), ("dining table", 1, 1, "center"),
        ("chair", 2, 6, "seat:6"), ("trash can", 0, 1, "free"), ("bench", 0, 1, "wall"),
        ("picture", 0, 1, "mount:1.3:1.7"), ("curtain", 0, 1, "curtain"),
    ),
    "bathroom": (
        ("door", 1, 1, "mount:0:0"), ("bathtub", 1, 1, "wall"), ("shower curtain", 1, 1, "shower"),
        ("toilet", 1, 1, "wall"), ("sink", 1, 2, "wall"), ("cabinet", 0, 1, "wall"),
        ("window", 0, 1, "mount:1.1:1.3"), ("trash can", 0, 1, "free"), ("picture", 0, 1, "mount:1.3:1.6"),
    ),
}

ROOM_SIZES: dict[str, tuple[tuple[float, float], tuple[float, float]]] = {
    "bedroom": ((3.6, 5.0), (3.2, 4.5)),
    "living room": ((4.5, 6.5), (4.0, 5.5)),
    "office": ((4.0, 6.5), (3.5, 5.0)),
    "kitchen": ((3.8, 5.5), (3.2, 4.5)),
    "bathroom": ((2.4, 3.2), (2.2, 3.0)),
}


@dataclass
class Placed:
    """An object placed in the room: its world mesh and oriented bounding box."""

    raw: str
    vertices: np.ndarray  # (V, 3) float64, map frame
    faces: np.ndarray  # (F, 3) int64, local to this object
    shade: np.ndarray  # (V,) colour scale per vertex
    box: OrientedBox
    wall: int = -1  # wall it stands against or hangs on, -1 for none
    support: int = -1  # index in the placed list of the object it stands on, -1 for the floor
    painted: list[PaintedPart] = field(default_factory=list)  # parts with their own colour, map frame


@dataclass
class Room:
    length: float  # x extent, metres
    width: float  # y extent
    height: float  # wall height
    room_type: str

    def wall_frame(self, k: int) -> tuple[np.ndarray, np.ndarray, float]:
        """Wall k: (start point (2,), unit direction along it (2,), its length)."""
        L, W = self.length, self.width
        starts = (np.array([0.0, 0.0]), np.array([L, 0.0]), np.array([L, W]), np.array([0.0, W]))
        dirs = (np.array([1.0, 0.0]), np.array([0.0, 1.0]), np.array([-1.0, 0.0]), np.array([0.0, -1.0]))
        return starts[k], dirs[k], (L, W, L, W)[k]


class Layout:
    """Places objects one by one; rejects poses whose boxes overlap earlier ones.

    ``shelf_books``: probability that a bookshelf compartment holds books. The books of the k-th
    placed object are drawn from their own generator, seeded by ``(detail_seed, k)``, never from
    ``rng``: the rest of the room is the same with or without them.
    """

    def __init__(self, room: Room, rng: np.random.Generator, spacing: float, margin: float = 0.02,
                 tries: int = 40, shelf_books: float = 0.0, detail_seed: int = 0) -> None:
        self.room, self.rng, self.spacing, self.margin, self.tries = room, rng, spacing, margin, tries
        self.shelf_books, self.detail_seed = shelf_books, detail_seed
        self.placed: list[Placed] = []
        self.reserved: list[OrientedBox] = []  # free space to keep (door swing)

    def _free(self, box: OrientedBox) -> bool:
        r = self.room
        corners = box.footprint()
        if corners.min() < -1e-9 or np.any(corners.max(0) > np.array([r.length, r.width]) + 1e-9):
            return False
        if box.zmin < -1e-9 or box.zmax > r.height:
            return False
        others = [p.box for p in self.placed] + self.reserved
        return not any(boxes_overlap(box, o, self.margin) for o in others)

    def _pose(self, parts: list[Part], yaw: float, origin: np.ndarray, raw: str, wall: int) -> Placed:
        (v, f), shade = local_mesh(parts)
        lo, hi = v.min(0), v.max(0)
        rot = rotation_z(yaw)
        world = v @ rot.T + origin
        center = rot @ ((lo + hi) / 2) + origin
        return Placed(raw, world, f, shade, OrientedBox(center, hi - lo, yaw), wall)

    def _posed(self, painted: list[PaintedPart], parts: list[Part], placed: Placed) -> list[PaintedPart]:
        """``painted`` (local frame of ``parts``) moved by the pose :meth:`_pose` gave ``placed``."""
        lo, hi = self._local_extent(parts)
        rot = rotation_z(placed.box.yaw)
        origin = placed.box.center - rot @ ((lo + hi) / 2)
        return [q._replace(vertices=q.vertices @ rot.T + origin) for q in painted]

    def _local_extent(self, parts: list[Part]) -> tuple[np.ndarray, np.ndarray]:
        (v, _), _ = local_mesh(parts)
        return v.min(0), v.max(0)

    def _against_wall(self, parts: list[Part], raw: str, z: float, wall: int | None = None,
                      gap: float | None = None) -> Placed | None:
        lo, hi = self._local_extent(parts)
        for _ in range(self.tries):
            k = int(self.rng.integers(4)) if wall is None else wall
            start, along, length = self.room.wall_frame(k)
            half_w = (hi[0] - lo[0]) / 2
            if length < 2 * half_w + 0.1:
                continue
            s = self.rng.uniform(half_w + 0.05, length - half_w - 0.05)
            g = self.rng.uniform(0.01, 0.05) if gap is None else gap
            inward = np.array([-along[1], along[0]])
            xy = start + s * along + inward * (g + hi[1])  # back (local +y max) touches wall + gap
            cand = self._pose(parts, WALL_YAW[k], np.array([xy[0], xy[1], z]), raw, k)
            if self._free(cand.box):
                return cand
        return None

    def _free_standing(self, parts: list[Part], raw: str, center: bool, any_yaw: bool) -> Placed | None:
        r = self.room
        for _ in range(self.tries):
            if any_yaw:
                yaw = float(self.rng.uniform(-math.pi, math.pi))
            else:
                yaw = WALL_YAW[int(self.rng.integers(4))]
            if center:
                xy = np.array([r.length, r.width]) * (0.5 + self.rng.uniform(-0.15, 0.15, 2))
            else:
                xy = np.array([self.rng.uniform(0.3, r.length - 0.3), self.rng.uniform(0.3, r.width - 0.3)])
            cand = self._pose(parts, yaw, np.array([xy[0], xy[1], 0.0]), raw, -1)
            if self._free(cand.box):
                return cand
        return None

    def _seat(self, parts: list[Part], raw: str, anchor: Placed) -> Placed | None:
        """A chair facing ``anchor`` (table or desk) from one of its free sides."""
        lo, hi = self._local_extent(parts)
        depth = hi[1] - lo[1]
        b = anchor.box
        rot = rotation_z(b.yaw)[:2, :2]
        # (outward normal in the anchor frame, half depth towards it, side length)
        sx, sy = b.size[0], b.size[1]
        sides = [(np.array([0.0, -1.0]), sy / 2, sx), (np.array([0.0, 1.0]), sy / 2, sx),
                 (np.array([-1.0, 0.0]), sx / 2, sy), (np.array([1.0, 0.0]), sx / 2, sy)]
        for _ in range(self.tries):
            normal, half, side_len = sides[int(self.rng.integers(4))]
            tangent = np.array([-normal[1], normal[0]])
            offset = self.rng.uniform(-0.3, 0.3) * max(side_len - 0.5, 0.0)
            local = normal * (half + 0.06 + depth / 2) + tangent * offset
            xy = b.center[:2] + rot @ local
            out = rot @ normal  # chair front (-y local) must face the anchor: R(yaw) @ (0, -1) == -out
            yaw = math.atan2(-out[0], out[1])
            c = (lo + hi) / 2
            origin = np.array([xy[0], xy[1], 0.0]) - rotation_z(yaw) @ np.array([c[0], c[1], 0.0])
            cand = self._pose(parts, yaw, origin, raw, -1)
            if self._free(cand.box):
                return cand
        return None

    def on_top(self, raw: str, support: int) -> Placed | None:
        """Place a small object on top of ``self.placed[support]`` (touching it, inside its top)."""
        parts = BUILDERS[raw](self.rng, self.spacing)
        lo, hi = self._local_extent(parts)
        sup = self.placed[support].box
        radius = float(np.linalg.norm(hi[:2] - lo[:2])) / 2  # fits at any yaw
        room = np.asarray(sup.size[:2]) / 2 - radius - 0.03
        if np.any(room <= 0):
            return None
        others = [p.box for i, p in enumerate(self.placed) if i != support] + self.reserved
        for _ in range(self.tries):
            yaw = sup.yaw + float(self.rng.uniform(-math.pi, math.pi))
            local = self.rng.uniform(-room, room)
            c = sup.center[:2] + rotation_z(sup.yaw)[:2, :2] @ local
            mid = rotation_z(yaw) @ np.array([(lo[0] + hi[0]) / 2, (lo[1] + hi[1]) / 2, 0.0])
            cand = self._pose(parts, yaw, np.array([c[0] - mid[0], c[1] - mid[1], sup.zmax]), raw, -1)
            if cand.box.zmax < self.room.height and not any(boxes_overlap(cand.box, o, self.margin)
                                                            for o in others):
                cand.support = support
                self.placed.append(cand)
                return cand
        return None

    def _curtain(self) -> Placed | None:
        windows = [p for p in self.placed if p.raw == "window"]
        if not windows:
            return None
        win = windows[int(self.rng.integers(len(windows)))]
        width = float(self.rng.uniform(0.4, 0.8))
        top = min(self.room.height - 0.05, win.box.zmax + 0.25)
        height = top - float(self.rng.uniform(0.05, 0.3))
        parts = curtain(self.rng, self.spacing, width=width, height=height)
        start, along, _ = self.room.wall_frame(win.wall)
        s_win = float((win.box.center[:2] - start) @ along)
        side = 1 if self.rng.random() < 0.5 else -1
        s = s_win + side * (win.box.size[0] / 2 + width / 2 - 0.05)
        lo, hi = self._local_extent(parts)
        inward = np.array([-along[1], along[0]])
        xy = start + s * along + inward * (0.1 + hi[1])
        origin = np.array([xy[0], xy[1], top - height])
        cand = self._pose(parts, WALL_YAW[win.wall], origin, "curtain", win.wall)
        return cand if self._free(cand.box) else None

    def _shower_curtain(self) -> Placed | None:
        tubs = [p for p in self.placed if p.raw == "bathtub"]
        if not tubs:
            return None
        tub = tubs[0]
        parts = shower_curtain(self.rng, self.spacing, width=float(tub.box.size[0]) - 0.05)
        lo, hi = self._local_extent(parts)
        rot = rotation_z(tub.box.yaw)
        ahead = tub.box.size[1] / 2 + 0.04 + (hi[1] - lo[1]) / 2
        front = tub.box.center + rot @ np.array([0.0, -ahead, 0.0])
        z = min(tub.box.zmax + 0.1, self.room.height - (hi[2] - lo[2]) - 0.05)
        mid = (lo + hi) / 2
        origin = np.array([front[0], front[1], z]) - rot @ np.array([mid[0], mid[1], 0.0])
        cand = self._pose(parts, tub.box.yaw, origin, "shower curtain", tub.wall)
        return cand if self._free(cand.box) else None

    def place(self, raw: str, placement: str) -> Placed | None:
        """Place one object of ``raw`` category; None when no free pose was found."""
        if placement == "curtain":
            p = self._curtain()
        elif placement == "shower":
            p = self._shower_curtain()
        else:
            frame = shelf_frame(self.rng) if raw == "bookshelf" else None
            parts = shelf_parts(frame, self.spacing) if frame else BUILDERS[raw](self.rng, self.spacing)
            if placement == "wall":
                p = self._against_wall(parts, raw, 0.0)
            elif placement in ("center", "free"):
                p = self._free_standing(parts, raw, center=placement == "center", any_yaw=placement == "free")
            elif placement.startswith("mount:"):
                zlo, zhi = (float(x) for x in placement.split(":")[1:])
                p = self._against_wall(parts, raw, float(self.rng.uniform(zlo, zhi)), gap=0.0)
            elif placement.startswith("seat:"):
                anchors = [q for q in self.placed if q.raw in ("table", "dining table", "desk")]
                p = self._seat(parts, raw, anchors[-1]) if anchors else None
            else:
                raise ValueError(f"unknown placement {placement!r} for {raw!r}")
            if p is not None and frame is not None and self.shelf_books > 0:
                books = shelf_books(frame, np.random.default_rng([self.detail_seed, len(self.placed)]),
                                    self.spacing, self.shelf_books)
                p.painted = self._posed(books, parts, p)
        if p is not None:
            self.placed.append(p)
            if raw == "door":  # keep the swing area free
                rot = rotation_z(p.box.yaw)
                c = p.box.center + rot @ np.array([0.0, -(p.box.size[1] / 2 + 0.5), 0.0])
                self.reserved.append(OrientedBox(np.array([c[0], c[1], 1.0]),
                                                 np.array([p.box.size[0] + 0.2, 0.9, 2.0]), p.box.yaw))
        return p


#: Furniture small objects may stand on, and the objects they may hold.
SUPPORTS: dict[str, tuple[str, ...]] = {
    "table": ("box", "book", "lamp"), "dining table": ("box", "book"), "coffee table": ("book", "box"),
    "desk": ("lamp", "book", "box"), "counter": ("box",), "cabinet": ("lamp", "box", "book"),
    "kitchen cabinet": ("box",), "file cabinet": ("box", "book"),
}


def furnish(room: Room, rng: np.random.Generator, spacing: float, clutter: float = 1.0,
            shelf_books: float = 0.0, detail_seed: int = 0) -> list[Placed]:
    """Fill ``room`` with the objects of its type (counts drawn per entry), then small objects
    on tables, desks, counters and low cabinets (``clutter``: mean number per support).
    ``shelf_books``, ``detail_seed``: books on bookshelves (:class:`Layout`)."""
    layout = Layout(room, rng, spacing, shelf_books=shelf_books, detail_seed=detail_seed)
    for raw, lo, hi, placement in ROOM_TYPES[room.room_type]:
        count = int(rng.integers(lo, hi + 1))
        if placement.startswith("seat:"):
            count = min(count, int(placement.split(":")[1]))
        for _ in range(count):
            layout.place(raw, placement)
    for i in range(len(layout.placed)):
        p = layout.placed[i]
        if p.raw not in SUPPORTS or p.box.zmax > 1.3 or clutter <= 0:
            continue
        for _ in range(int(rng.poisson(clutter))):
            kinds = SUPPORTS[p.raw]
            layout.on_top(kinds[int(rng.integers(len(kinds)))], i)
    return layout.placed
