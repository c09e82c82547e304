"""The whole pipeline on the MuJoCo simulator (no hardware): sim node + pi0 nodes, sim time.

    ros2 launch pi0_ros sim.launch.py embodiment:=trossen_bimanual prompt:="pick up the red cube"

The sim node publishes the same joint-state/camera topics as the real drivers and listens to
the same command topics, so nothing else changes between sim and hardware.
"""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, IncludeLaunchDescription
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare


def generate_launch_description() -> LaunchDescription:
    return LaunchDescription([
        DeclareLaunchArgument("embodiment", default_value="trossen_bimanual",
                              description="Simulated embodiment (trossen_bimanual, ur5e or franka)"),
        DeclareLaunchArgument("checkpoint", default_value="",
                              description="pi0 checkpoint directory; empty = tiny preset with RANDOM weights"),
        DeclareLaunchArgument("prompt", default_value="pick up the red cube", description="Task prompt"),
        DeclareLaunchArgument("task", default_value="", description="Simulated task (empty = the embodiment's default)"),
        DeclareLaunchArgument("seed", default_value="0", description="Scene randomisation seed"),
        DeclareLaunchArgument("rviz", default_value="false", description="Start rviz2 with config/pi0.rviz"),
        Node(package="pi0_ros", executable="sim_node", name="pi0_sim", output="screen",
             parameters=[{"embodiment": LaunchConfiguration("embodiment"), "task": LaunchConfiguration("task"),
                          "seed": LaunchConfiguration("seed"), "use_sim_time": True}]),
        IncludeLaunchDescription(
            PythonLaunchDescriptionSource(PathJoinSubstitution([FindPackageShare("pi0_ros"), "launch", "pi0.launch.py"])),
            launch_arguments={"embodiment": LaunchConfiguration("embodiment"),
                              "checkpoint": LaunchConfiguration("checkpoint"),
                              "prompt": LaunchConfiguration("prompt"), "dry_run": "false",
                              "use_sim_time": "true", "rviz": LaunchConfiguration("rviz")}.items()),
    ])
