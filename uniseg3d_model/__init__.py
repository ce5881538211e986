"""UniSeg3D: one transformer for panoptic, semantic, instance, interactive,
referring and open-vocabulary 3D segmentation. Pure PyTorch; no ROS imports."""

__version__ = "0.1.0"
