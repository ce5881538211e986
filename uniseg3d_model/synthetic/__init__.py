"""Procedurally generated indoor scenes in ScanNet's file formats (issue 8).

:func:`generate_scene` builds a furnished room as a labelled mesh in memory;
:mod:`.scannet_export` writes it in ScanNet v2's raw layout; :mod:`.sentences` writes
ScanRefer-style referring sentences; :mod:`.render` renders RGB-D frames along a camera loop;
:func:`.sample.scene_to_sample` gives the in-memory ``SceneSample``.
"""

from uniseg3d_model.synthetic.scene import SceneConfig, SyntheticObject, SyntheticScene, generate_scene

__all__ = ["SceneConfig", "SyntheticObject", "SyntheticScene", "generate_scene"]
