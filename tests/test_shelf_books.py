"""Books on generated bookshelves: inside the carcass, on its boards, apart from each other, part of
the bookshelf; the rest of the room is the same with or without them."""

from __future__ import annotations

import itertools
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from uniseg3d_model.synthetic.furniture import shelf_frame
from uniseg3d_model.synthetic.scene import SceneConfig, generate_scene
from uniseg3d_model.synthetic.shelf_books import shelf_books

SPACING = 0.04


def _extent(part):
    return part.vertices.min(0), part.vertices.max(0)


@pytest.mark.parametrize("seed", range(6))
def test_books_stand_on_boards_inside_the_carcass_apart(seed: int) -> None:
    frame = shelf_frame(np.random.default_rng(seed))
    books = shelf_books(frame, np.random.default_rng(100 + seed), SPACING, fill=1.0)
    floors = [z0 for z0, _ in frame.compartments()]
    assert books
    for b in books:
        lo, hi = _extent(b)
        assert lo[0] >= -frame.w / 2 + frame.t - 1e-9 and hi[0] <= frame.w / 2 - frame.t + 1e-9
        assert lo[1] >= -frame.d / 2 and hi[1] <= frame.d / 2 - frame.t  # behind the front, before the back
        # standing on a board (a flat stack: on a board or on the book under it), under the next one
        ceiling = next(z1 for z0, z1 in frame.compartments() if z0 - 1e-9 <= lo[2] < z1)
        assert hi[2] <= ceiling
        assert any(abs(lo[2] - z) < 1e-9 for z in floors) or any(
            abs(lo[2] - _extent(o)[1][2]) < 1e-9 for o in books if o is not b
        )
    for a, b in itertools.combinations(books, 2):
        (alo, ahi), (blo, bhi) = _extent(a), _extent(b)
        overlap = np.minimum(ahi, bhi) - np.maximum(alo, blo)
        assert np.any(overlap <= 1e-9), "two books intersect"


def test_fill_sets_how_many_compartments_hold_books() -> None:
    frame = shelf_frame(np.random.default_rng(3))
    assert shelf_books(frame, np.random.default_rng(0), SPACING, fill=0.0) == []
    full = shelf_books(frame, np.random.default_rng(0), SPACING, fill=1.0)
    held = {next(i for i, (z0, z1) in enumerate(frame.compartments()) if z0 - 1e-9 <= _extent(b)[0][2] < z1)
            for b in full}
    assert held == set(range(frame.n_shelves))
    with pytest.raises(ValueError, match="fill"):
        shelf_books(frame, np.random.default_rng(0), SPACING, fill=1.5)


def test_books_are_part_of_their_bookshelf_and_leave_the_room_unchanged() -> None:
    cfg = SceneConfig(spacing=0.05)
    with_books = generate_scene(1, "scene0001_00", cfg, room_type="office")  # an office has 1-2 bookshelves
    empty = generate_scene(1, "scene0001_00", SceneConfig(spacing=0.05, shelf_books=0.0), room_type="office")
    assert [(o.raw_category, o.color_name, o.annotated) for o in with_books.objects] == [
        (o.raw_category, o.color_name, o.annotated) for o in empty.objects
    ]
    shelves = 0
    for a, b in zip(with_books.objects, empty.objects):
        assert np.allclose(a.box.center, b.box.center) and np.allclose(a.box.size, b.box.size)
        ma, mb = with_books.instance == a.object_id, empty.instance == b.object_id
        n = int(mb.sum())
        # the object's own vertices, colours and labels first, exactly as without books
        assert np.array_equal(with_books.vertices[ma][:n], empty.vertices[mb])
        assert np.array_equal(with_books.colors[ma][:n], empty.colors[mb])
        if a.raw_category != "bookshelf":
            assert ma.sum() == n
            continue
        shelves += 1
        extra = with_books.vertices[ma][n:].astype(np.float64)
        assert len(extra) > 0  # the books: labelled as the bookshelf, inside its box
        assert np.all(with_books.semantic[ma] == a.nyu40id)
        assert np.all(a.box.grown(4 * cfg.surface_noise).contains(extra))
        assert len(np.unique(with_books.colors[ma][n:], axis=0)) > 10  # books of many colours
    assert shelves >= 1
    # faces never join two objects
    f = with_books.faces
    assert np.all(with_books.instance[f[:, 0]] == with_books.instance[f[:, 1]])
    assert np.all(with_books.instance[f[:, 0]] == with_books.instance[f[:, 2]])


def test_shelf_books_out_of_range_is_refused() -> None:
    with pytest.raises(ValueError, match="shelf_books"):
        SceneConfig(shelf_books=-0.1)
    cmd = [sys.executable, "-m", "training.generate_synthetic", "--out", "x", "--num-scenes", "1",
           "--shelf-books", "2"]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1])
    assert proc.returncode == 2 and "--shelf-books must be in [0, 1]" in proc.stderr
