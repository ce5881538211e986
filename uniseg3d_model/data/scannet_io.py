"""Readers (and a PLY writer) for the raw ScanNet v2 files, numpy only.

Every reader raises ``FileNotFoundError`` for a missing file and ``ValueError``
naming the file and the offending field for a malformed one.

- ``<scene>_vh_clean_2.ply`` / ``_vh_clean_2.labels.ply``: PLY meshes (binary or
  ASCII) read by :func:`read_ply` with every property kept (``label`` included).
- ``<scene>_vh_clean_2.0.010000.segs.json``: ``{"segIndices": [per-vertex segment id]}``.
- ``<scene>.aggregation.json``: ``{"segGroups": [{"objectId", "label", "segments"}]}``.
- ``scannetv2-labels.combined.tsv``: raw category -> ``id`` (ScanNet200) and ``nyu40id``.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

_PLY_TYPES: dict[str, str] = {
    "char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1",
    "short": "i2", "int16": "i2", "ushort": "u2", "uint16": "u2",
    "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
    "float": "f4", "float32": "f4", "double": "f8", "float64": "f8",
}  # fmt: skip


@dataclass
class _Element:
    name: str
    count: int
    scalars: list[tuple[str, str]]  # (name, numpy type code)
    lists: list[tuple[str, str, str]]  # (name, count type, item type)


def _ply_type(token: str, path: Path) -> str:
    if token not in _PLY_TYPES:
        raise ValueError(f"{path}: unknown PLY property type {token!r}")
    return _PLY_TYPES[token]


def _parse_header(raw: bytes, path: Path) -> tuple[str, list[_Element], int]:
    end = raw.find(b"end_header")
    if not raw.startswith(b"ply") or end < 0:
        raise ValueError(f"{path}: not a PLY file (missing 'ply' magic or 'end_header')")
    body_start = raw.index(b"\n", end) + 1
    fmt = ""
    elements: list[_Element] = []
    for line in raw[:end].decode("ascii", errors="replace").splitlines()[1:]:
        tok = line.split()
        if not tok or tok[0] in ("comment", "obj_info"):
            continue
        if tok[0] == "format":
            fmt = tok[1]
        elif tok[0] == "element":
            elements.append(_Element(tok[1], int(tok[2]), [], []))
        elif tok[0] == "property":
            if not elements:
                raise ValueError(f"{path}: PLY property before any element")
            if tok[1] == "list":
                elements[-1].lists.append((tok[4], _ply_type(tok[2], path), _ply_type(tok[3], path)))
            else:
                elements[-1].scalars.append((tok[2], _ply_type(tok[1], path)))
    if fmt not in ("ascii", "binary_little_endian", "binary_big_endian"):
        raise ValueError(f"{path}: unsupported PLY format {fmt!r}")
    for el in elements:
        if el.lists and (el.scalars or len(el.lists) > 1):
            raise ValueError(f"{path}: element {el.name!r} mixes list and scalar properties (unsupported)")
    return fmt, elements, body_start


def _read_binary_lists(buf: bytes, offset: int, el: _Element, endian: str, path: Path) -> tuple[dict, int]:
    """Fixed-length lists (e.g. triangles): all rows must have the first row's count."""
    name, ctype, itype = el.lists[0]
    if el.count == 0:
        return {name: np.zeros((0, 3), np.int64)}, offset
    k = int(np.frombuffer(buf, endian + ctype, 1, offset)[0])
    row = np.dtype([("n", endian + ctype), ("v", endian + itype, (k,))])
    if offset + row.itemsize * el.count > len(buf):
        raise ValueError(f"{path}: PLY element {el.name!r} truncated")
    data = np.frombuffer(buf, row, el.count, offset)
    if np.any(data["n"] != k):
        raise ValueError(f"{path}: element {el.name!r} has lists of varying length (only fixed supported)")
    return {name: data["v"].astype(np.int64)}, offset + row.itemsize * el.count


def read_ply(path: str | Path) -> dict[str, dict[str, np.ndarray]]:
    """Read a PLY file -> ``{element: {property: array}}`` (all properties, e.g. ``label``).

    Scalar properties become ``(count,)`` arrays of their PLY type; a list property
    (faces' ``vertex_indices``) becomes a ``(count, k)`` int64 array (fixed k only).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"PLY file not found: {path}")
    raw = path.read_bytes()
    fmt, elements, offset = _parse_header(raw, path)
    out: dict[str, dict[str, np.ndarray]] = {}
    if fmt == "ascii":
        lines = raw[offset:].decode("ascii", errors="replace").split("\n")
        row = 0
        for el in elements:
            chunk = lines[row : row + el.count]
            row += el.count
            if len(chunk) < el.count or (el.count and not chunk[-1].strip()):
                raise ValueError(f"{path}: PLY element {el.name!r} truncated (expected {el.count} rows)")
            try:
                flat = np.array(" ".join(chunk).split(), dtype=np.float64)
            except ValueError as exc:
                raise ValueError(f"{path}: non-numeric value in element {el.name!r}: {exc}") from None
            ncols = len(el.scalars) if not el.lists else (int(flat[0]) + 1 if el.count else 4)
            if flat.size != el.count * ncols:
                raise ValueError(f"{path}: element {el.name!r} has {flat.size} values, expected "
                                 f"{el.count} rows x {ncols}")
            table = flat.reshape(el.count, ncols)
            if el.lists:
                if np.any(table[:, 0] != ncols - 1):
                    raise ValueError(f"{path}: element {el.name!r} has lists of varying length")
                out[el.name] = {el.lists[0][0]: table[:, 1:].astype(np.int64)}
            else:
                out[el.name] = {n: table[:, j].astype(t) for j, (n, t) in enumerate(el.scalars)}
        return out
    endian = "<" if fmt == "binary_little_endian" else ">"
    for el in elements:
        if el.lists:
            out[el.name], offset = _read_binary_lists(raw, offset, el, endian, path)
            continue
        dtype = np.dtype([(n, endian + t) for n, t in el.scalars])
        if offset + dtype.itemsize * el.count > len(raw):
            raise ValueError(f"{path}: PLY element {el.name!r} truncated (needs {dtype.itemsize * el.count} "
                             f"bytes at offset {offset}, file has {len(raw)})")
        data = np.frombuffer(raw, dtype, el.count, offset)
        offset += dtype.itemsize * el.count
        out[el.name] = {n: data[n].astype(data[n].dtype.newbyteorder("=")) for n, _ in el.scalars}
    return out


def write_ply(path: str | Path, vertex: dict[str, np.ndarray], faces: np.ndarray | None = None,
              binary: bool = True) -> None:
    """Write a PLY (binary little endian or ASCII) with the given vertex properties and triangles."""
    path = Path(path)
    names = list(vertex)
    n = len(vertex[names[0]])
    types = {v: k for k, v in _PLY_TYPES.items() if k in ("char", "uchar", "short", "ushort", "int", "uint",
                                                           "float", "double")}
    header = [f"format {'binary_little_endian' if binary else 'ascii'} 1.0", f"element vertex {n}"]
    for name in names:
        code = np.asarray(vertex[name]).dtype.str[1:]
        if code not in types:
            raise ValueError(f"write_ply: property {name!r} has unsupported dtype {vertex[name].dtype}")
        header.append(f"property {types[code]} {name}")
    if faces is not None:
        header += [f"element face {len(faces)}", "property list uchar int vertex_indices"]
    head = ("ply\n" + "\n".join(header) + "\nend_header\n").encode("ascii")
    vdtype = np.dtype([(k, "<" + np.asarray(vertex[k]).dtype.str[1:]) for k in names])
    table = np.empty(n, vdtype)
    for k in names:
        table[k] = vertex[k]
    if binary:
        parts = [head, table.tobytes()]
        if faces is not None:
            faces = np.asarray(faces)
            fd = np.dtype([("n", "u1"), ("v", "<i4", (faces.shape[1],))])
            ft = np.empty(len(faces), fd)
            ft["n"], ft["v"] = faces.shape[1], faces
            parts.append(ft.tobytes())
        path.write_bytes(b"".join(parts))
        return
    text = io.StringIO()
    cols = np.stack([np.asarray(vertex[k], np.float64) for k in names], axis=1)
    fmts = ["%.9g" if np.asarray(vertex[k]).dtype.kind == "f" else "%d" for k in names]
    np.savetxt(text, cols, fmt=fmts)
    if faces is not None:
        faces = np.asarray(faces)
        np.savetxt(text, np.concatenate([np.full((len(faces), 1), faces.shape[1]), faces], 1), fmt="%d")
    path.write_bytes(head + text.getvalue().encode("ascii"))


def _load_json(path: Path) -> object:
    if not path.is_file():
        raise FileNotFoundError(f"JSON file not found: {path}")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: malformed JSON ({exc})") from None


def read_segs(path: str | Path) -> np.ndarray:
    """``*.segs.json`` -> per-vertex segment ids ``(V,)`` int64 (ids as in the file, not relabelled)."""
    path = Path(path)
    data = _load_json(path)
    if not isinstance(data, dict) or "segIndices" not in data:
        raise ValueError(f"{path}: missing field 'segIndices'")
    try:
        seg = np.asarray(data["segIndices"], dtype=np.int64)
    except (TypeError, ValueError):
        raise ValueError(f"{path}: field 'segIndices' is not a list of integers") from None
    if seg.ndim != 1:
        raise ValueError(f"{path}: field 'segIndices' must be a flat list, got shape {seg.shape}")
    return seg


def read_aggregation(path: str | Path) -> list[dict]:
    """``*.aggregation.json`` -> list of ``{"object_id": int, "label": str, "segments": list[int]}``."""
    path = Path(path)
    data = _load_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("segGroups"), list):
        raise ValueError(f"{path}: missing list field 'segGroups'")
    groups = []
    for i, g in enumerate(data["segGroups"]):
        for key in ("label", "segments"):
            if not isinstance(g, dict) or key not in g:
                raise ValueError(f"{path}: segGroups[{i}] lacks field {key!r}")
        oid = g.get("objectId", g.get("id", i))
        groups.append({"object_id": int(oid), "label": str(g["label"]), "segments": list(g["segments"])})
    return groups


def read_label_map(path: str | Path) -> dict[str, tuple[int, int]]:
    """``scannetv2-labels.combined.tsv`` -> ``{raw_category: (id, nyu40id)}``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"label map not found: {path}")
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh, delimiter="\t")
        missing = {"raw_category", "id", "nyu40id"} - set(reader.fieldnames or [])
        if missing:
            raise ValueError(f"{path}: missing column(s) {sorted(missing)}")
        out: dict[str, tuple[int, int]] = {}
        for row_no, row in enumerate(reader, start=2):
            try:
                out.setdefault(row["raw_category"], (int(row["id"]), int(row["nyu40id"] or 0)))
            except ValueError:
                raise ValueError(f"{path}: line {row_no}: non-integer id/nyu40id "
                                 f"({row['id']!r}, {row['nyu40id']!r})") from None
    return out


def write_label_map(path: str | Path, rows: list[tuple[str, int, int]]) -> None:
    """Write a minimal ``scannetv2-labels.combined.tsv`` from ``(raw_category, id, nyu40id)`` rows."""
    lines = ["id\traw_category\tcategory\tcount\tnyu40id"]
    lines += [f"{i}\t{raw}\t{raw}\t1\t{nyu}" for raw, i, nyu in rows]
    Path(path).write_text("\n".join(lines) + "\n")


def read_split(path: str | Path) -> list[str]:
    """``scannetv2_<split>.txt`` -> scene ids (blank lines skipped)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"split file not found: {path}")
    return [ln.strip() for ln in path.read_text().splitlines() if ln.strip()]


def read_axis_alignment(path: str | Path) -> np.ndarray:
    """``<scene>.txt`` meta file -> its ``axisAlignment`` (4, 4) float64 (identity when the key is absent)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"scene meta file not found: {path}")
    for line in path.read_text().splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "axisAlignment":
            try:
                matrix = np.array(value.split(), dtype=np.float64)
            except ValueError:
                raise ValueError(f"{path}: axisAlignment has non-numeric values") from None
            if matrix.size != 16:
                raise ValueError(f"{path}: axisAlignment needs 16 values, got {matrix.size}")
            return matrix.reshape(4, 4)
    return np.eye(4)
