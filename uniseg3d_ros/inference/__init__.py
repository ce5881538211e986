"""Inference on scene-map snapshots (no ROS imports): the engine that runs UniSeg3D on a map
and the result structures it answers with."""
