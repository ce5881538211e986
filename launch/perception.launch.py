"""Launch uniseg3d_node with launch/config/params.yaml (and optionally RViz with launch/uniseg3d.rviz).

    ros2 launch uniseg3d_ros perception.launch.py
    ros2 launch uniseg3d_ros perception.launch.py rviz:=true params_file:=/path/to/my_params.yaml
    ros2 launch uniseg3d_ros perception.launch.py cloud_topic:=/camera/depth/points
    ros2 launch uniseg3d_ros perception.launch.py namespace:=robot1 use_sim_time:=true rviz:=true
    ros2 launch uniseg3d_ros perception.launch.py managed:=true   # lifecycle node, then configure/activate it

Topic arguments remap the node's private inputs (~/cloud, ~/depth, ...) to your driver's topics.
``namespace`` puts the node (and its topics, services, action and ``clicked_point``) under
``/<namespace>``; the parameters of ``params_file`` apply whatever the namespace, and RViz gets a
copy of launch/uniseg3d.rviz whose topics follow the namespace. ``use_sim_time`` is passed to the
node and RViz. ``managed:=true`` starts ``uniseg3d_lifecycle_node`` (unconfigured; drive it with
``ros2 lifecycle set /<ns>/uniseg3d_node configure`` then ``activate``, or a lifecycle manager).
"""

import tempfile
from pathlib import Path

import yaml
from ament_index_python.packages import get_package_share_directory
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from launch import LaunchDescription

INPUTS = {  # launch argument -> private topic of the node
    "cloud_topic": "~/cloud",
    "depth_topic": "~/depth",
    "color_topic": "~/color",
    "camera_info_topic": "~/camera_info",
    "pose_topic": "~/pose",
    "odom_topic": "~/odom",
}
TRUE = ("true", "1", "yes", "on")


def _node_parameters(params_file: str) -> dict:
    """The ros__parameters of the file's single node entry (so they apply in any namespace)."""
    data = yaml.safe_load(Path(params_file).read_text()) or {}
    entries = [v for v in data.values() if isinstance(v, dict) and "ros__parameters" in v]
    if len(entries) != 1:
        raise RuntimeError(f"{params_file}: expected one node entry with ros__parameters")
    return dict(entries[0]["ros__parameters"])


def _launch_setup(context, *args, **kwargs):
    from uniseg3d_ros.tools.rviz_config import namespaced_rviz_config

    share = Path(get_package_share_directory("uniseg3d_ros"))
    value = {name: LaunchConfiguration(name).perform(context) for name in ARGUMENTS}
    namespace = value["namespace"].strip("/")
    sim_time = value["use_sim_time"].lower() in TRUE
    params = _node_parameters(value["params_file"] or str(share / "launch" / "config" / "params.yaml"))
    params["use_sim_time"] = sim_time
    managed = value["managed"].lower() in TRUE
    actions = [
        Node(
            package="uniseg3d_ros",
            executable="uniseg3d_lifecycle_node" if managed else "uniseg3d_node",
            name="uniseg3d_node",
            namespace=namespace,
            output="screen",
            emulate_tty=True,
            parameters=[params],
            remappings=[(private, value[name]) for name, private in INPUTS.items()],
            arguments=["--ros-args", "--log-level", value["log_level"]],
        )
    ]
    if value["rviz"].lower() in TRUE:
        text = namespaced_rviz_config((share / "launch" / "uniseg3d.rviz").read_text(), namespace)
        config = Path(tempfile.gettempdir()) / f"uniseg3d_{namespace.replace('/', '_') or 'root'}.rviz"
        config.write_text(text)
        actions.append(
            Node(
                package="rviz2",
                executable="rviz2",
                name="rviz2",
                namespace=namespace,
                arguments=["-d", str(config)],
                parameters=[{"use_sim_time": sim_time}],
            )
        )
    return actions


ARGUMENTS = {
    "params_file": ("", "YAML file with uniseg3d_node parameters ('' = the installed params.yaml)"),
    "namespace": ("", "namespace of the node (and RViz's topics)"),
    "use_sim_time": ("false", "use /clock (simulation or bag replay) as the node's and RViz's time"),
    "managed": ("false", "start the managed (lifecycle) node instead of the plain one"),
    "rviz": ("false", "also start RViz2"),
    "log_level": ("info", "node log level"),
    **{name: (private, f"topic remapped to {private}") for name, private in INPUTS.items()},
}


def generate_launch_description() -> LaunchDescription:
    args = [
        DeclareLaunchArgument(name, default_value=default, description=text)
        for name, (default, text) in ARGUMENTS.items()
    ]
    return LaunchDescription([*args, OpaqueFunction(function=_launch_setup)])
