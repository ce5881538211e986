"""Plain data containers shared by data loading, the model, losses and evaluation.

Everything is per scene and lives in the scene's own frame (metres, z up).
Arrays may be numpy or torch; the model converts with :func:`torch.as_tensor`.

Shapes (N points, S superpoints, I instances, K clicks, T sentences):

``SceneSample``  -- one scene as the dataset yields it and the model consumes it
    points       (N, 3) float32, metres
    colors       (N, 3) float32 in [0, 1]
    superpoints  (N,)   int64 in [0, S); every id in range is used
    semantic     (N,)   int64 ScanNet20 index, IGNORE_INDEX where unlabelled   [training/eval]
    instance     (N,)   int64 instance index in [0, I), IGNORE_INDEX for none   [training/eval]
    instance_class (I,) int64 ScanNet20 index of each instance (a "thing" class) [training/eval]
    clicks       (K, 3) float32 click positions (metres) for interactive queries
    click_instance (K,) int64 instance each click targets                     [training/eval]
    texts        list[str] of length T, referring sentences
    text_instance (T,)  int64 instance each sentence refers to                [training/eval]
    vocabulary   optional list[str]: class names for open-vocabulary classification;
                 None means the classes the model was trained on.
    voxel_points optional (N, 3) float32 metres: where training augmentation (the official
                 elastic distortion) places each point for voxelization only; the point
                 features keep ``points``. None: voxelize ``points``.               [training]
    pseudo_masks optional (M, S) bool: class-agnostic pseudo masks over superpoints (the
                 official SAM3D masks, ScanNet20 objects removed); supervised by the
                 pseudo-mask loss with its own matcher.                            [training]

The model voxelizes ``points`` itself (``ModelConfig.voxel_size``, 2 cm), so a batch is simply
``list[SceneSample]`` (see :func:`collate_scenes`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from uniseg3d_model.data.labels import IGNORE_INDEX


@dataclass
class SceneSample:
    points: Any
    colors: Any
    superpoints: Any
    scene_id: str = ""
    semantic: Any = None
    instance: Any = None
    instance_class: Any = None
    clicks: Any = None
    click_instance: Any = None
    texts: list[str] = field(default_factory=list)
    text_instance: Any = None
    vocabulary: list[str] | None = None
    voxel_points: Any = None
    pseudo_masks: Any = None

    def __post_init__(self) -> None:
        n = len(self.points)
        if np.asarray(self.points).ndim != 2 or np.asarray(self.points).shape[1] != 3:
            raise ValueError(f"points must be (N, 3), got shape {np.shape(self.points)}")
        for name in ("colors",) + (("voxel_points",) if self.voxel_points is not None else ()):
            shape = np.shape(getattr(self, name))
            if shape != (n, 3):
                raise ValueError(f"{name} must be ({n}, 3) to match points, got {shape}")
        for name in ("superpoints", "semantic", "instance"):
            value = getattr(self, name)
            if value is not None and np.shape(value) != (n,):
                raise ValueError(f"{name} must be ({n},) to match points, got {np.shape(value)}")
        if self.clicks is not None and (np.ndim(self.clicks) != 2 or np.shape(self.clicks)[1] != 3):
            raise ValueError(f"clicks must be (K, 3), got shape {np.shape(self.clicks)}")

    @property
    def num_points(self) -> int:
        return len(self.points)

    @property
    def num_superpoints(self) -> int:
        return int(np.asarray(self.superpoints).max()) + 1 if len(self.superpoints) else 0

    @property
    def num_instances(self) -> int:
        return 0 if self.instance_class is None else len(self.instance_class)


def collate_scenes(samples: list[SceneSample]) -> list[SceneSample]:
    """Batches are lists of scenes; the model voxelizes and concatenates them."""
    return list(samples)


__all__ = ["IGNORE_INDEX", "SceneSample", "collate_scenes"]
