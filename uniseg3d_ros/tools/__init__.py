"""Command-line tools around the node: ``uniseg3d_replay``, ``uniseg3d_demo``, the figure
renderer, and isolated ROS domains for the demo and the tests."""
