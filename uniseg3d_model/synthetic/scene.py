"""Procedural indoor scenes: :func:`generate_scene` builds one room as a coloured, labelled mesh.

A scene is deterministic in its seed (same seed and config -> identical arrays). Frames and
units: map frame, metres, z up, floor at z = 0, the room spanning [0, length] x [0, width].
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from uniseg3d_model.data.labels import NYU40_TO_SCANNET20
from uniseg3d_model.synthetic.categories import RAW_CATEGORIES
from uniseg3d_model.synthetic.geometry import OrientedBox
from uniseg3d_model.synthetic.layout import ROOM_SIZES, ROOM_TYPES, Placed, Room, furnish
from uniseg3d_model.synthetic.primitives import grid_quad
from uniseg3d_model.synthetic.shelf_books import PaintedPart

#: Colour names used in sentences -> RGB.
PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (178, 40, 38), "green": (58, 138, 72), "blue": (48, 82, 168), "yellow": (222, 190, 58),
    "orange": (222, 120, 40), "brown": (118, 78, 44), "black": (36, 36, 38), "white": (234, 234, 228),
    "gray": (128, 128, 130), "beige": (214, 194, 158), "pink": (222, 150, 170), "purple": (118, 70, 150),
}
_FURNITURE_COLORS = ("red", "green", "blue", "yellow", "orange", "brown", "black", "white", "gray", "beige",
                     "pink", "purple")
_WOOD = ("brown", "beige", "black", "white", "gray")
#: Raw category -> colours it may take (default: any furniture colour).
CLASS_COLORS: dict[str, tuple[str, ...]] = {
    "wall": ("white", "beige", "gray"), "floor": ("brown", "gray", "beige"),
    "door": ("brown", "white", "gray", "beige"), "window": ("white", "gray", "black"),
    "table": _WOOD, "dining table": _WOOD, "coffee table": _WOOD, "desk": _WOOD, "bookshelf": _WOOD,
    "cabinet": _WOOD + ("blue", "green"), "kitchen cabinet": _WOOD + ("blue", "green"),
    "file cabinet": ("gray", "black", "white", "beige"),
    "counter": ("white", "gray", "black", "beige", "brown"),
    "refrigerator": ("white", "gray", "black"), "toilet": ("white", "beige"), "sink": ("white", "gray"),
    "bathtub": ("white", "beige"), "trash can": ("gray", "black", "blue", "green", "white"),
    "box": ("brown", "beige", "white"),
}


@dataclass(frozen=True)
class SceneConfig:
    spacing: float = 0.04  # max mesh edge length (metres); ScanNet _vh_clean_2 is ~2-5 cm
    room_types: tuple[str, ...] = tuple(ROOM_TYPES)  # drawn uniformly per scene
    color_noise: float = 6.0  # std of per-vertex colour noise (0-255 units)
    surface_noise: float = 0.004  # std of per-vertex position jitter (metres), like scanner noise
    wall_height: tuple[float, float] = (2.4, 2.8)
    clutter: float = 1.0  # mean number of small objects (box, lamp, book) per table/desk/counter/cabinet
    unannotated: float = 0.3  # probability that a small object is left unannotated (label 0, no segGroup)
    # probability that a bookshelf compartment holds books (0: empty bookshelves, the rooms as
    # generated before books; the rest of a room is the same either way)
    shelf_books: float = 0.85

    def __post_init__(self) -> None:
        if not 0.005 <= self.spacing <= 0.5:
            raise ValueError(f"spacing must be in [0.005, 0.5] metres, got {self.spacing}")
        if self.clutter < 0 or not 0.0 <= self.unannotated <= 1.0:
            raise ValueError(f"clutter must be >= 0 and unannotated in [0, 1], got {self.clutter}, "
                             f"{self.unannotated}")
        if not 0.0 <= self.shelf_books <= 1.0:
            raise ValueError(f"shelf_books must be in [0, 1], got {self.shelf_books}")
        if not 0.0 <= self.surface_noise <= 0.02 or self.color_noise < 0:
            raise ValueError(f"surface_noise must be in [0, 0.02] m and color_noise >= 0, got "
                             f"{self.surface_noise}, {self.color_noise}")
        unknown = [t for t in self.room_types if t not in ROOM_TYPES]
        if unknown or not self.room_types:
            raise ValueError(f"room_types must be a non-empty subset of {sorted(ROOM_TYPES)}, got {unknown}")


@dataclass
class SyntheticObject:
    object_id: int  # ScanNet aggregation objectId (0-based)
    raw_category: str  # e.g. "office chair"
    nyu40id: int
    color_name: str
    rgb: tuple[int, int, int]
    box: OrientedBox  # oriented bounding box, map frame
    wall: int = -1  # wall index it stands against / hangs on, -1 none
    support: int = -1  # object_id of the furniture it stands on, -1 for the floor
    annotated: bool = True  # False: left out of the aggregation, NYU40 label 0 (as ScanNet's gaps)

    @property
    def nyu40class(self) -> str:
        return RAW_CATEGORIES[self.raw_category].nyu40class

    @property
    def scannet20(self) -> int:
        """ScanNet20 training index, or -1 for a class outside the 20."""
        return NYU40_TO_SCANNET20.get(self.nyu40id, -1)

    @property
    def center(self) -> np.ndarray:
        return self.box.center

    @property
    def size(self) -> np.ndarray:
        return self.box.size

    @property
    def volume(self) -> float:
        return float(np.prod(self.box.size))


@dataclass
class SyntheticScene:
    scene_id: str
    seed: int
    room_type: str
    room: Room
    vertices: np.ndarray  # (V, 3) float32 metres, map frame
    faces: np.ndarray  # (F, 3) int32
    colors: np.ndarray  # (V, 3) uint8 RGB
    semantic: np.ndarray  # (V,) int64 NYU40 id per vertex (0 = unannotated)
    instance: np.ndarray  # (V,) int64 object_id per vertex (also for unannotated objects)
    objects: list[SyntheticObject] = field(default_factory=list)

    @property
    def num_vertices(self) -> int:
        return len(self.vertices)

    def object(self, object_id: int) -> SyntheticObject:
        for o in self.objects:
            if o.object_id == object_id:
                return o
        raise KeyError(f"scene {self.scene_id} has no object_id {object_id}")


def _structure(room: Room, spacing: float) -> list[Placed]:
    """Floor and four walls as inward-facing grids (no ceiling, as in ScanNet scans)."""
    h = room.height
    floor_v, floor_f = grid_quad(np.zeros(3), np.array([room.length, 0, 0.0]), np.array([0, room.width, 0.0]),
                                 spacing)
    out = [Placed("floor", floor_v, floor_f, np.ones(len(floor_v)),
                  OrientedBox(np.array([room.length / 2, room.width / 2, 0.0]),
                              np.array([room.length, room.width, 0.0])))]
    ext = 0.02  # walls overlap at the corners and reach below the floor: no cracks to see through
    for k in range(4):
        start, along, length = room.wall_frame(k)
        origin = np.array([start[0] - ext * along[0], start[1] - ext * along[1], -ext])
        v, f = grid_quad(origin, np.array([0, 0, h + ext]),
                         np.array([along[0], along[1], 0.0]) * (length + 2 * ext), spacing)
        origin = np.array([start[0], start[1], 0.0])
        mid = origin + np.array([along[0], along[1], 0.0]) * length / 2 + np.array([0, 0, h / 2])
        yaw = float(np.arctan2(along[1], along[0]))
        box = OrientedBox(mid, np.array([length, 0.0, h]), yaw)
        out.append(Placed("wall", v, f, np.ones(len(v)), box, k))
    return out


def generate_scene(seed: int, scene_id: str = "scene0000_00", config: SceneConfig | None = None,
                   room_type: str | None = None) -> SyntheticScene:
    """Build one furnished room from ``seed`` (deterministic).

    Returns a :class:`SyntheticScene` whose mesh concatenates floor, walls and furniture; every
    vertex carries its NYU40 id and objectId; ``objects`` lists the instances in objectId order.
    """
    cfg = config or SceneConfig()
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    rng = np.random.default_rng(int(seed))
    rtype = room_type or cfg.room_types[int(rng.integers(len(cfg.room_types)))]
    if rtype not in ROOM_TYPES:
        raise ValueError(f"room_type must be one of {sorted(ROOM_TYPES)}, got {rtype!r}")
    (lx0, lx1), (ly0, ly1) = ROOM_SIZES[rtype]
    room = Room(float(rng.uniform(lx0, lx1)), float(rng.uniform(ly0, ly1)),
                float(rng.uniform(*cfg.wall_height)), rtype)
    structure = _structure(room, cfg.spacing)
    placed = structure + furnish(room, rng, cfg.spacing, cfg.clutter, cfg.shelf_books, int(seed))
    annotated = [p.support < 0 or rng.random() >= cfg.unannotated for p in placed]
    # ScanNet numbers annotated objects 0..K-1; unannotated ones come after them here.
    order = sorted(range(len(placed)), key=lambda i: not annotated[i])  # stable: keeps placement order
    new_id = {old: new for new, old in enumerate(order)}

    wall_color = _pick_color(rng, "wall")
    verts, faces, colors, sem, inst, objects, offset = [], [], [], [], [], [], 0
    for oid, p in enumerate(placed[i] for i in order):
        cname = wall_color if p.raw == "wall" else _pick_color(rng, p.raw)
        rgb = np.array(PALETTE[cname], dtype=np.float64)
        noise = rng.normal(0.0, cfg.color_noise, size=(len(p.vertices), 3)) if cfg.color_noise > 0 else 0.0
        col = np.clip(rgb * p.shade[:, None] + noise, 0, 255).round().astype(np.uint8)
        cat = RAW_CATEGORIES[p.raw]
        jitter = rng.normal(0.0, cfg.surface_noise, size=p.vertices.shape) if cfg.surface_noise > 0 else 0.0
        ov, of, oc = [p.vertices + jitter], [p.faces], [col]
        if p.painted:  # own colours and noise from their own generator: `rng` draws as without them
            _add_painted(ov, of, oc, p.painted, np.random.default_rng([int(seed), 2, oid]), cfg)
        n = sum(len(v) for v in ov)
        verts.extend(ov)
        faces.append(np.concatenate(of) + offset)
        colors.extend(oc)
        labelled = annotated[order[oid]]
        sem.append(np.full(n, cat.nyu40id if labelled else 0, dtype=np.int64))
        inst.append(np.full(n, oid, dtype=np.int64))
        support = new_id[p.support + len(structure)] if p.support >= 0 else -1
        objects.append(SyntheticObject(oid, p.raw, cat.nyu40id, cname, PALETTE[cname], p.box, p.wall,
                                       support, labelled))
        offset += n
    return SyntheticScene(
        scene_id=scene_id, seed=int(seed), room_type=rtype, room=room,
        vertices=np.concatenate(verts).astype(np.float32), faces=np.concatenate(faces).astype(np.int32),
        colors=np.concatenate(colors), semantic=np.concatenate(sem), instance=np.concatenate(inst),
        objects=objects,
    )


def _add_painted(verts: list[np.ndarray], faces: list[np.ndarray], colors: list[np.ndarray],
                 painted: list[PaintedPart], rng: np.random.Generator, cfg: SceneConfig) -> None:
    """Append ``painted`` parts (each its own colour) to one object's mesh lists, in place: faces
    offset past the vertices already there, the same colour and surface noise as every other vertex."""
    n = sum(len(v) for v in verts)
    for q in painted:
        noise = rng.normal(0.0, cfg.color_noise, size=(len(q.vertices), 3)) if cfg.color_noise > 0 else 0.0
        rgb = np.array(PALETTE[q.color], dtype=np.float64) * q.shade
        colors.append(np.clip(rgb + noise, 0, 255).round().astype(np.uint8))
        jitter = rng.normal(0.0, cfg.surface_noise, size=q.vertices.shape) if cfg.surface_noise > 0 else 0.0
        verts.append(q.vertices + jitter)
        faces.append(q.faces + n)
        n += len(q.vertices)


def _pick_color(rng: np.random.Generator, raw: str) -> str:
    choices = CLASS_COLORS.get(raw, _FURNITURE_COLORS)
    return choices[int(rng.integers(len(choices)))]
