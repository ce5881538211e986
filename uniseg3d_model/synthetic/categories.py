"""Raw categories used by the synthetic scenes and their rows of ``scannetv2-labels.combined.tsv``.

The ``id`` column is ScanNet's raw label id (the ScanNet200 ids in
:mod:`uniseg3d_model.data.labels`); ``nyu40id``/``nyu40class`` map each raw category to NYU40 as
the real file does (e.g. ``couch`` -> 6 ``sofa``, ``trash can`` -> 39 ``otherfurniture``).
"""

from __future__ import annotations

from dataclasses import dataclass

from uniseg3d_model.data.labels import SCANNET200_CLASS_IDS, SCANNET200_CLASSES

#: Header of the real ``scannetv2-labels.combined.tsv``.
TSV_COLUMNS: tuple[str, ...] = (
    "id", "raw_category", "category", "count", "nyu40id", "eigen13id", "nyuClass", "nyu40class",
    "eigen13class", "ModelNet40", "ModelNet10", "ShapeNetCore55", "synsetoffset", "wnsynsetid",
    "wnsynsetkey", "mpcat40", "mpcat40index",
)


@dataclass(frozen=True)
class RawCategory:
    raw: str  # raw_category (annotators' label, written to aggregation.json)
    nyu40id: int
    nyu40class: str
    eigen13id: int
    eigen13class: str
    mpcat40index: int
    mpcat40: str

    @property
    def scannet_id(self) -> int:
        """The ``id`` column (ScanNet200 raw id)."""
        return SCANNET200_CLASS_IDS[SCANNET200_CLASSES.index(self.raw)]

    @property
    def name(self) -> str:
        """Name used in sentences (``couch`` reads as ``couch``, ``trash can`` as ``trash can``)."""
        return self.raw


def _c(raw: str, nyu: int, nyu_cls: str, e13: int, e13_cls: str, mp: int, mp_cls: str) -> RawCategory:
    return RawCategory(raw, nyu, nyu_cls, e13, e13_cls, mp, mp_cls)


# fmt: off
RAW_CATEGORIES: dict[str, RawCategory] = {c.raw: c for c in (
    _c("wall", 1, "wall", 12, "Wall", 1, "wall"),
    _c("floor", 2, "floor", 5, "Floor", 2, "floor"),
    _c("cabinet", 3, "cabinet", 6, "Furniture", 7, "cabinet"),
    _c("kitchen cabinet", 3, "cabinet", 6, "Furniture", 7, "cabinet"),
    _c("file cabinet", 3, "cabinet", 6, "Furniture", 7, "cabinet"),
    _c("bed", 4, "bed", 1, "Bed", 11, "bed"),
    _c("chair", 5, "chair", 4, "Chair", 3, "chair"),
    _c("office chair", 5, "chair", 4, "Chair", 3, "chair"),
    _c("armchair", 5, "chair", 4, "Chair", 3, "chair"),
    _c("couch", 6, "sofa", 9, "Sofa", 10, "sofa"),
    _c("table", 7, "table", 10, "Table", 5, "table"),
    _c("coffee table", 7, "table", 10, "Table", 5, "table"),
    _c("dining table", 7, "table", 10, "Table", 5, "table"),
    _c("door", 8, "door", 12, "Wall", 4, "door"),
    _c("window", 9, "window", 13, "Window", 9, "window"),
    _c("bookshelf", 10, "bookshelf", 6, "Furniture", 31, "shelving"),
    _c("picture", 11, "picture", 8, "Picture", 6, "picture"),
    _c("counter", 12, "counter", 6, "Furniture", 26, "counter"),
    _c("desk", 14, "desk", 10, "Table", 5, "table"),
    _c("curtain", 16, "curtain", 13, "Window", 12, "curtain"),
    _c("refrigerator", 24, "refridgerator", 6, "Furniture", 37, "appliances"),
    _c("shower curtain", 28, "shower curtain", 7, "Objects", 12, "curtain"),
    _c("toilet", 33, "toilet", 6, "Furniture", 18, "toilet"),
    _c("sink", 34, "sink", 6, "Furniture", 15, "sink"),
    _c("bathtub", 36, "bathtub", 6, "Furniture", 25, "bathtub"),
    _c("trash can", 39, "otherfurniture", 6, "Furniture", 39, "objects"),
    _c("ottoman", 39, "otherfurniture", 6, "Furniture", 34, "seating"),
    _c("bench", 39, "otherfurniture", 6, "Furniture", 34, "seating"),
    # small objects outside the ScanNet20 classes (ignored by the 20-class benchmark)
    _c("box", 29, "box", 7, "Objects", 39, "objects"),
    _c("lamp", 35, "lamp", 7, "Objects", 28, "lighting"),
    _c("book", 23, "books", 2, "Books", 39, "objects"),
)}
# fmt: on


def tsv_text(counts: dict[str, int] | None = None) -> str:
    """The ``scannetv2-labels.combined.tsv`` text covering :data:`RAW_CATEGORIES`.

    ``counts``: optional raw_category -> number of annotated instances (the ``count`` column).
    Columns the synthetic data has no value for (ModelNet, ShapeNet, WordNet) are empty.
    """
    counts = counts or {}
    lines = ["\t".join(TSV_COLUMNS)]
    for c in sorted(RAW_CATEGORIES.values(), key=lambda c: c.scannet_id):
        row = {
            "id": c.scannet_id, "raw_category": c.raw, "category": c.raw, "count": counts.get(c.raw, 0),
            "nyu40id": c.nyu40id, "eigen13id": c.eigen13id, "nyuClass": c.nyu40class,
            "nyu40class": c.nyu40class, "eigen13class": c.eigen13class, "mpcat40": c.mpcat40,
            "mpcat40index": c.mpcat40index,
        }
        lines.append("\t".join(str(row.get(col, "")) for col in TSV_COLUMNS))
    return "\n".join(lines) + "\n"
