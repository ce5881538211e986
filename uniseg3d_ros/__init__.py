"""UniSeg3D-ROS: scene-map fusion and the ROS 2 node around the UniSeg3D model.

The subpackages are the layers, bottom to top:

- ``mapping``: the mapping core, no ROS (PointCloud2 codec, RGB-D back-projection, stamp
  sync, voxel-hashed ``SceneMap`` and its files, pose math and pose sources);
- ``inference``: the inference engine and its result structures, no ROS (map snapshot ->
  superpoints -> UniSeg3D -> instances);
- ``node``: the ROS 2 glue (``uniseg3d_node``: parameters, topics, services, markers);
- ``tools``: command-line tools around the node (replay, demo, figure renderer, isolated
  ROS domains for the demo and the tests).

Lower layers never import higher ones.
"""

__version__ = "0.1.0"
