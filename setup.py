"""ament_python package ``uniseg3d_ros`` (the node) plus the pure-PyTorch ``uniseg3d_model``.

Built by colcon in a ROS 2 workspace (``colcon build --base-paths src src/uniseg3d_ros/msg``, see
docs/install.md)
or installed editable into the project venv (``pip install --no-deps --no-build-isolation -e .``).
"""

from glob import glob

from setuptools import find_packages, setup

PACKAGE = "uniseg3d_ros"

setup(
    name=PACKAGE,
    version="0.1.0",
    description="ROS 2 node for UniSeg3D unified 3D scene segmentation on a fused scene map",
    license="Apache-2.0",
    maintainer="UniSeg3D-ROS maintainers",
    maintainer_email="uniseg3d-ros@example.com",
    python_requires=">=3.10",
    packages=find_packages(
        include=["uniseg3d_ros", "uniseg3d_ros.*", "uniseg3d_model", "uniseg3d_model.*"],
        exclude=["tests", "tests.*"],
    ),
    # the shipped default model, loaded by the node and the demo when no checkpoint is given
    package_data={"uniseg3d_model": ["weights/*.pt", "weights/*.json"]},
    include_package_data=True,
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", sorted(glob("launch/*.launch.py") + glob("launch/*.rviz"))),
        (f"share/{PACKAGE}/launch/config", sorted(glob("launch/config/*.yaml"))),
    ],
    install_requires=["setuptools"],
    entry_points={
        "console_scripts": [
            "uniseg3d_node = uniseg3d_ros.node.node:main",
            "uniseg3d_lifecycle_node = uniseg3d_ros.node.lifecycle:main",
            "uniseg3d_replay = uniseg3d_ros.tools.replay:main",
            "uniseg3d_demo = uniseg3d_ros.tools.demo.main:cli",
        ],
    },
)
