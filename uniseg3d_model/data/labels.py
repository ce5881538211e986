"""Label sets used across the project.

ScanNet20 is the 20-class benchmark subset of NYU40 (ids from the ScanNet
benchmark scripts). Index ``i`` in :data:`SCANNET20_CLASSES` is the training
label; :data:`SCANNET20_NYU40_IDS[i]` is its NYU40 id in
``scannetv2-labels.combined.tsv``. Wall and floor are "stuff" for panoptic
segmentation, the other 18 are "things" (instances), as in UniSeg3D/OneFormer3D.
"""

from __future__ import annotations

IGNORE_INDEX = -100

SCANNET20_CLASSES: tuple[str, ...] = (
    "wall", "floor", "cabinet", "bed", "chair", "sofa", "table", "door", "window",
    "bookshelf", "picture", "counter", "desk", "curtain", "refrigerator",
    "shower curtain", "toilet", "sink", "bathtub", "otherfurniture",
)
SCANNET20_NYU40_IDS: tuple[int, ...] = (
    1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 14, 16, 24, 28, 33, 34, 36, 39,
)
STUFF_CLASSES: tuple[str, ...] = ("wall", "floor")
THING_CLASSES: tuple[str, ...] = tuple(c for c in SCANNET20_CLASSES if c not in STUFF_CLASSES)
#: ScanNet20 label index -> True when the class is a thing (has instances).
IS_THING: tuple[bool, ...] = tuple(c not in STUFF_CLASSES for c in SCANNET20_CLASSES)

NYU40_TO_SCANNET20: dict[int, int] = {nyu: i for i, nyu in enumerate(SCANNET20_NYU40_IDS)}
