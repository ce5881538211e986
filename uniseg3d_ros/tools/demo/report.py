"""The demo's printed summary (``summary.txt``) and its machine-readable twin (``summary.json``)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


@dataclass
class Query:
    """One planner call and how its answer scores against ground truth."""

    kind: str
    request: str
    ok: bool
    message: str
    latency_ms: float = 0.0
    round_trip_ms: float = 0.0
    rows: list[dict[str, Any]] = field(default_factory=list)  # one per returned instance
    iou: float | None = None  # the answer's mask vs the ground truth (refer / interactive)
    figure: str = ""

RULE = "=" * 78


def _short(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


def _table(rows: list[dict[str, Any]], columns: list[tuple[str, str, int]]) -> list[str]:
    """Fixed-width rows; ``columns``: (key, header, width)."""
    head = "    " + "  ".join(f"{h:<{w}}" for _, h, w in columns)
    lines = [head.rstrip()]
    for r in rows:
        cells = []
        for key, _, w in columns:
            v = r.get(key, "")
            v = f"{v:.2f}" if isinstance(v, float) else str(v)
            cells.append(f"{_short(v, w):<{w}}")
        lines.append(("    " + "  ".join(cells)).rstrip())
    return lines


def format_summary(facts: dict[str, Any], queries: list[Any], runner: Any) -> str:
    """The human-readable summary printed at the end of the demo."""
    f = facts
    out = [RULE, "UniSeg3D-ROS demo summary", RULE]
    size = f.get("room_size_m", [0, 0])
    out.append(
        f"room        {f.get('scene_id')} ({f.get('room_type')}, {size[0]} x {size[1]} m, "
        f"{f.get('objects')} objects), {f.get('frames')} RGB-D frames "
        f"{f['image_size'][0]}x{f['image_size'][1]}"
    )
    out.append(f"model       {f.get('model')}")
    if f.get("untrained"):
        out.append("            !! The model is UNTRAINED: masks, labels and IoUs below only show that the")
        out.append("            !! pipeline runs end to end; they are NOT meaningful. Ship or pass a trained")
        out.append("            !! checkpoint (uniseg3d_model/weights/default.pt or --checkpoint PATH).")
    out.append(
        f"map         {f.get('map_points')} points (2 cm voxels) fused from {f.get('frames_fused')}/"
        f"{f.get('frames')} frames"
        + (f" ({f['frames_resent']} sent again, unacknowledged)" if f.get("frames_resent") else "")
        + f", replay {f.get('replay_s')} s, ROS domain {f.get('ros_domain_id')}"
    )
    seg = getattr(runner, "segment_info", {})
    for q in queries:
        out.append("")
        if q.kind == "segment":
            out.append(
                f"~/segment   {seg.get('instances')} instances in {q.latency_ms:.0f} ms; semantic accuracy "
                f"{seg.get('semantic_accuracy', 0):.2f}, mIoU {seg.get('semantic_miou', 0):.2f}; "
                f"objects found (IoU >= 0.5) {seg.get('things_found')}/{seg.get('things_visible')}, "
                f"with the right label {seg.get('things_found_labelled')}/{seg.get('things_visible')}"
            )
            out += _table(
                q.rows[:15],
                [
                    ("id", "id", 3),
                    ("label", "label", 14),
                    ("score", "score", 5),
                    ("points", "points", 6),
                    ("truth", "best ground-truth object", 26),
                    ("iou", "IoU", 4),
                ],
            )
            if len(q.rows) > 15:
                out.append(f"    ... {len(q.rows) - 15} more in summary.json")
        elif q.kind == "refer":
            out.append(f"~/refer     {_short(q.request, 66)}")
            out.append(_query_line(q))
        elif q.kind == "open_vocab":
            truth = getattr(runner, "vocab_truth", {})
            out.append(
                f"~/open_vocab {q.request}: {len(q.rows)} instances in {q.latency_ms:.0f} ms; "
                "in the map: " + ", ".join(f"{w} {n}" for w, n in truth.items())
            )
            out += _table(
                q.rows[:10],
                [
                    ("label", "label", 10),
                    ("score", "score", 5),
                    ("points", "points", 6),
                    ("truth", "best object of that class", 26),
                    ("iou", "IoU", 4),
                ],
            )
        elif q.kind == "interactive":
            out.append(f"~/interactive {q.request}")
            out.append(_query_line(q))
    out.append("")
    later = [q.latency_ms for q in queries if q.kind != "segment" and q.ok]
    seg_q = [q for q in queries if q.kind == "segment"]
    if seg_q:
        lat = f"latency     ~/segment {seg_q[0].latency_ms:.0f} ms (superpoints + backbone + decoder)"
        if later:
            lat += f"; prompt queries median {np.median(later):.0f} ms (decoder only, cached features)"
        out.append(lat)
        rts = [q.round_trip_ms - q.latency_ms for q in queries]
        out.append(f"            service round trip overhead median {np.median(rts):.0f} ms")
    scored = [q for q in queries if q.kind in ("refer", "interactive") and q.ok and q.iou is not None]
    if scored:
        out.append("answered    " + ", ".join(
            f"{kind} {sum(q.iou >= 0.5 for q in scored if q.kind == kind)}/"
            f"{sum(1 for q in scored if q.kind == kind)}"
            for kind in ("refer", "interactive") if any(q.kind == kind for q in scored)
        ) + " at IoU >= 0.5")
    failed = [q for q in queries if not q.ok]
    out.append(
        f"queries     {len(queries) - len(failed)}/{len(queries)} succeeded"
        + ("; FAILED: " + ", ".join(f"{q.kind} ({q.message})" for q in failed) if failed else "")
    )
    figs = [q.figure for q in queries if q.figure.endswith(".png") and Path(q.figure).is_file()]
    if figs:
        out.append(
            f"figures     {len(figs)} PNGs (left: answer, right: ground truth; top-down above, "
            "perspective below)"
        )
        out += [f"            {p}" for p in figs]
    out.append(f"total       {f.get('total_s')} s")
    out.append(f"output      {f.get('out')}")
    out.append(RULE)
    return "\n".join(out)


def _query_line(q: Any) -> str:
    if not q.ok:
        return f"    FAILED: {q.message}"
    r = q.rows[0] if q.rows else {}
    return (
        f"    -> {r.get('label', '?')}, {r.get('points', 0)} points"
        + (f", score {r['score']:.2f}" if "score" in r else "")
        + f" | target {r.get('truth', '?')} ({r.get('truth_points', 0)} points): IoU {q.iou:.2f}"
        + f" | {q.latency_ms:.0f} ms"
    )


def write_summary(out: Path, text: str, facts: dict[str, Any], queries: list[Any]) -> None:
    """Write ``summary.txt`` (the printed text) and ``summary.json`` (facts and every query)."""
    (out / "summary.txt").write_text(text + "\n")
    data = {"facts": facts, "queries": [asdict(q) for q in queries]}
    (out / "summary.json").write_text(json.dumps(data, indent=1, default=_jsonable))


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
