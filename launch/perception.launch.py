"""Launch uniseg3d_node with launch/config/params.yaml (and optionally RViz with launch/uniseg3d.rviz).

    ros2 launch uniseg3d_ros perception.launch.py
    ros2 launch uniseg3d_ros perception.launch.py rviz:=true params_file:=/path/to/my_params.yaml
    ros2 launch uniseg3d_ros perception.launch.py cloud_topic:=/camera/depth/points

Topic arguments remap the node's private inputs (~/cloud, ~/depth, ...) to your driver's topics.
"""

from launch.actions import DeclareLaunchArgument
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

from launch import LaunchDescription

INPUTS = {  # launch argument -> private topic of the node
    "cloud_topic": "~/cloud",
    "depth_topic": "~/depth",
    "color_topic": "~/color",
    "camera_info_topic": "~/camera_info",
    "pose_topic": "~/pose",
    "odom_topic": "~/odom",
}


def generate_launch_description() -> LaunchDescription:
    share = FindPackageShare("uniseg3d_ros")
    args = [
        DeclareLaunchArgument(
            "params_file",
            default_value=PathJoinSubstitution([share, "launch", "config", "params.yaml"]),
            description="YAML file with uniseg3d_node parameters",
        ),
        DeclareLaunchArgument("rviz", default_value="false", description="also start RViz2"),
        DeclareLaunchArgument("log_level", default_value="info", description="node log level"),
    ]
    args += [
        DeclareLaunchArgument(name, default_value=private, description=f"topic remapped to {private}")
        for name, private in INPUTS.items()
    ]
    node = Node(
        package="uniseg3d_ros",
        executable="uniseg3d_node",
        name="uniseg3d_node",
        output="screen",
        emulate_tty=True,
        parameters=[LaunchConfiguration("params_file")],
        remappings=[(private, LaunchConfiguration(name)) for name, private in INPUTS.items()],
        arguments=["--ros-args", "--log-level", LaunchConfiguration("log_level")],
    )
    rviz = Node(
        package="rviz2",
        executable="rviz2",
        name="rviz2",
        arguments=["-d", PathJoinSubstitution([share, "launch", "uniseg3d.rviz"])],
        condition=IfCondition(LaunchConfiguration("rviz")),
    )
    return LaunchDescription([*args, node, rviz])
