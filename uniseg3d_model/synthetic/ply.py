"""Binary little-endian PLY writing and reading for triangle meshes, as ScanNet stores them.

ScanNet's ``_vh_clean_2.ply`` has vertex properties ``x y z`` (float) and ``red green blue
alpha`` (uchar), and faces as ``list uchar int vertex_indices``; ``_vh_clean_2.labels.ply``
adds a ``ushort label`` vertex property. :func:`write_ply` writes any such layout from a
structured vertex array; :func:`read_ply` reads binary little-endian (and ASCII) files with
scalar vertex properties and triangle faces back.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

_PLY_TYPES = {
    "char": "i1", "uchar": "u1", "short": "<i2", "ushort": "<u2", "int": "<i4", "uint": "<u4",
    "float": "<f4", "double": "<f8", "int8": "i1", "uint8": "u1", "int16": "<i2", "uint16": "<u2",
    "int32": "<i4", "uint32": "<u4", "float32": "<f4", "float64": "<f8",
}
_NP_TO_PLY = {"i1": "char", "u1": "uchar", "<i2": "short", "<u2": "ushort", "<i4": "int", "<u4": "uint",
              "<f4": "float", "<f8": "double"}


def write_ply(path: str | Path, vertex: np.ndarray, faces: np.ndarray, comment: str = "") -> None:
    """Write a binary little-endian PLY.

    vertex: (V,) structured array whose fields become vertex properties, in order;
    faces: (F, 3) integer vertex indices, written as ``list uchar int vertex_indices``.
    """
    faces = np.asarray(faces)
    if faces.ndim != 2 or faces.shape[1] != 3:
        raise ValueError(f"faces must be (F, 3), got {faces.shape}")
    if len(faces) and (faces.min() < 0 or faces.max() >= len(vertex)):
        raise ValueError(f"faces index vertices outside [0, {len(vertex)})")
    lines = ["ply", "format binary_little_endian 1.0"]
    if comment:
        lines.append(f"comment {comment}")
    lines.append(f"element vertex {len(vertex)}")
    for name in vertex.dtype.names:
        lines.append(f"property {_NP_TO_PLY[vertex.dtype[name].newbyteorder('<').str.lstrip('|')]} {name}")
    lines += [f"element face {len(faces)}", "property list uchar int vertex_indices", "end_header"]
    face_rec = np.empty(len(faces), dtype=[("n", "u1"), ("idx", "<i4", (3,))])
    face_rec["n"] = 3
    face_rec["idx"] = faces
    little = vertex.astype(vertex.dtype.newbyteorder("<"), copy=False)
    with open(path, "wb") as f:
        f.write(("\n".join(lines) + "\n").encode("ascii"))
        f.write(little.tobytes())
        f.write(face_rec.tobytes())


def mesh_vertex_array(vertices: np.ndarray, colors: np.ndarray,
                      label: np.ndarray | None = None) -> np.ndarray:
    """ScanNet's vertex layout: x y z float, red green blue alpha uchar (+ ushort label)."""
    fields = [("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("red", "u1"), ("green", "u1"), ("blue", "u1"),
              ("alpha", "u1")]
    if label is not None:
        fields.append(("label", "<u2"))
    out = np.empty(len(vertices), dtype=fields)
    for i, axis in enumerate("xyz"):
        out[axis] = vertices[:, i]
    for i, ch in enumerate(("red", "green", "blue")):
        out[ch] = colors[:, i]
    out["alpha"] = 255
    if label is not None:
        if label.min(initial=0) < 0 or label.max(initial=0) > 65535:
            raise ValueError("label must fit in ushort [0, 65535]")
        out["label"] = label
    return out


def read_ply(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Read a PLY mesh: ``(vertex structured array (V,), faces (F, 3) int64)``.

    Supports ``binary_little_endian`` and ``ascii``, scalar vertex properties, and triangle
    faces stored as one list property (any count/index types).
    """
    data = Path(path).read_bytes()
    end = data.find(b"end_header\n")
    if not data.startswith(b"ply") or end < 0:
        raise ValueError(f"{path}: not a PLY file (missing 'ply' magic or 'end_header')")
    header = data[:end].decode("ascii").splitlines()
    body = data[end + len(b"end_header\n"):]
    fmt, elements = None, []
    for line in header[1:]:
        tok = line.split()
        if not tok or tok[0] in ("comment", "obj_info"):
            continue
        if tok[0] == "format":
            fmt = tok[1]
        elif tok[0] == "element":
            elements.append((tok[1], int(tok[2]), []))
        elif tok[0] == "property":
            elements[-1][2].append(tok[1:])
    if fmt not in ("binary_little_endian", "ascii"):
        raise ValueError(f"{path}: unsupported PLY format {fmt!r}")
    vertex, faces = None, np.zeros((0, 3), dtype=np.int64)
    if fmt == "ascii":
        rows = body.decode("ascii").split("\n")
        pos = 0
        for name, count, props in elements:
            chunk = rows[pos:pos + count]
            pos += count
            if name == "vertex":
                vals = np.array([r.split() for r in chunk], dtype=np.float64).reshape(count, len(props))
                vertex = np.empty(count, dtype=[(p[1], _PLY_TYPES[p[0]]) for p in props])
                for i, p in enumerate(props):
                    vertex[p[1]] = vals[:, i]
            elif name == "face":
                vals = np.array([r.split() for r in chunk], dtype=np.int64).reshape(count, -1)
                faces = vals[:, 1:4]
        return _check_vertex(path, vertex), faces
    offset = 0
    for name, count, props in elements:
        if props and props[0][0] == "list":
            count_t, idx_t = _PLY_TYPES[props[0][1]], _PLY_TYPES[props[0][2]]
            rec = np.dtype([("n", count_t), ("idx", idx_t, (3,))])
            arr = np.frombuffer(body, dtype=rec, count=count, offset=offset)
            if count and np.any(arr["n"] != 3):
                raise ValueError(f"{path}: element {name!r} has non-triangle faces")
            offset += rec.itemsize * count
            if name == "face":
                faces = arr["idx"].astype(np.int64)
            continue
        dt = np.dtype([(p[1], _PLY_TYPES[p[0]]) for p in props])
        arr = np.frombuffer(body, dtype=dt, count=count, offset=offset)
        offset += dt.itemsize * count
        if name == "vertex":
            vertex = arr.copy()
    return _check_vertex(path, vertex), faces


def _check_vertex(path: str | Path, vertex: np.ndarray | None) -> np.ndarray:
    if vertex is None:
        raise ValueError(f"{path}: no 'vertex' element")
    return vertex
