"""Per-point prediction containers returned by :mod:`uniseg3d_model.postprocess`."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class InstancePrediction:
    """masks (M, N) bool per point; classes (M,) int64 vocabulary index; scores (M,) float32;
    labels: class name of each instance."""

    masks: np.ndarray
    classes: np.ndarray
    scores: np.ndarray
    labels: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.scores)


@dataclass
class PanopticPrediction:
    """semantic (N,) int64 class per point; instance (N,) int64 index into ``instances`` or -1
    for stuff / unassigned points; instances: the things actually painted."""

    semantic: np.ndarray
    instance: np.ndarray
    instances: InstancePrediction
