"""Training prompts of one scene: clicks for the interactive queries, sentences for the referring ones.

Official recipe (transforms_3d.py, c272954):
- ``PointPromptGeneration(samplePoint=True)`` (~113-165): a click on EVERY instance, instances in
  a random order; the click is, among up to 500 points drawn from the instance without
  replacement, the one nearest to the centroid of those drawn points.
- ``TextPromptGeneration(random_select=False)`` (~13-59): EVERY described object, in a random
  order, with one of its sentences drawn at random. The config's ``num_ins=3`` is not read on
  this path (``num_ins = len(text_infos)``).

Our variants stay as named options: ``click_mode="near_centre"`` (a random point among the
``centre_fraction`` nearest to the centroid) and ``text_mode="sentences"`` (sentences drawn
uniformly from all of the scene's sentences); ``num_clicks`` / ``num_texts`` cap the count
(None = every instance / object, the official setting).

Without a Generator (evaluation) both are deterministic: the point nearest the centroid for
the first instances, the first sentences in file order.
"""

from __future__ import annotations

import numpy as np

CLICK_MODES = ("official", "near_centre")
TEXT_MODES = ("per_object", "sentences")
OFFICIAL_CLICK_SAMPLE = 500


def _check(mode: str, allowed: tuple[str, ...], name: str) -> None:
    if mode not in allowed:
        raise ValueError(f"{name} must be one of {allowed}, got {mode!r}")


def sample_clicks(points: np.ndarray, instance: np.ndarray, num_instances: int, num_clicks: int | None,
                  rng: np.random.Generator | None, centre_fraction: float = 0.2,
                  mode: str = "official") -> tuple[np.ndarray, np.ndarray]:
    """One click for each of ``num_clicks`` instances (all of them when None).

    points (N, 3), instance (N,) in [0, num_instances) or negative. Returns
    ``(clicks (K, 3) float32, click_instance (K,) int64)``; training order is random
    (official) or ascending (``near_centre``, ours).
    """
    _check(mode, CLICK_MODES, "click_mode")
    k = num_instances if num_clicks is None else min(num_clicks, num_instances)
    if k == 0:
        return np.zeros((0, 3), np.float32), np.zeros(0, np.int64)
    if rng is None:
        targets = np.arange(k)
    elif mode == "official":
        targets = rng.permutation(num_instances)[:k]
    else:
        targets = np.sort(rng.choice(num_instances, k, replace=False))
    clicks = np.empty((k, 3), np.float32)
    for j, inst in enumerate(targets):  # K instances, each vectorized over its points
        pts = points[instance == inst]
        if rng is None:
            clicks[j] = pts[np.argmin(np.linalg.norm(pts - pts.mean(0), axis=1))]
        elif mode == "official":
            drawn = pts[rng.choice(len(pts), min(len(pts), OFFICIAL_CLICK_SAMPLE), replace=False)]
            clicks[j] = drawn[np.argmin(np.linalg.norm(drawn - drawn.mean(0), axis=1))]
        else:
            dist = np.linalg.norm(pts - pts.mean(0), axis=1)
            m = max(1, int(np.ceil(centre_fraction * len(pts))))
            near = np.argpartition(dist, m - 1)[:m]
            clicks[j] = pts[near[rng.integers(m)]]
    return clicks, targets.astype(np.int64)


def sample_texts(entries: list[dict], old_to_new: np.ndarray, num_texts: int | None,
                 rng: np.random.Generator | None, mode: str = "per_object") -> tuple[list[str], np.ndarray]:
    """Sentences whose instance survives the label-set selection.

    entries: ``{"description", "instance"}`` dicts (``instance`` indexes ``old_to_new``).
    ``per_object`` (official): one random sentence per described object, objects in random
    order; ``sentences`` (ours): sentences drawn uniformly. At most ``num_texts`` (None: no cap).
    Returns ``(texts, text_instance (T,) int64)``.
    """
    _check(mode, TEXT_MODES, "text_mode")
    usable = [(e["description"], int(old_to_new[e["instance"]])) for e in entries
              if 0 <= e["instance"] < len(old_to_new) and old_to_new[e["instance"]] >= 0]
    cap = len(usable) if num_texts is None else num_texts
    if rng is None:
        chosen = usable[:cap]
    elif mode == "per_object":
        by_object: dict[int, list[str]] = {}
        for text, inst in usable:
            by_object.setdefault(inst, []).append(text)
        objects = list(by_object)
        order = rng.permutation(len(objects))[:cap]
        chosen = []
        for i in order:
            texts = by_object[objects[i]]
            chosen.append((texts[rng.integers(len(texts))], objects[i]))
    else:
        t = min(cap, len(usable))
        chosen = [usable[i] for i in np.sort(rng.choice(len(usable), t, replace=False))]
    return [c[0] for c in chosen], np.array([c[1] for c in chosen], np.int64)
