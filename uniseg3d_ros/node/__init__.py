"""The ROS 2 node ``uniseg3d_node``: thin glue (parameters, topics, services, markers) around
``uniseg3d_ros.mapping`` and ``uniseg3d_ros.inference``."""
