"""``python -m uniseg3d_ros.tools.demo``: same as ``uniseg3d_demo``."""

from uniseg3d_ros.tools.demo.main import cli

cli()
