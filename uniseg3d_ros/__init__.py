"""UniSeg3D-ROS: scene-map fusion and the ROS 2 node around the UniSeg3D model.

Core modules (``rgbd``, ``pointcloud2``, ``scene_map``, ``markers``) import no ROS;
only ``node`` and ``replay`` talk to rclpy.
"""

__version__ = "0.1.0"
