"""``python -m uniseg3d_ros.tools.demo``: same as ``uniseg3d_demo``."""

import sys

from uniseg3d_ros.tools.demo.main import main

sys.exit(main())
