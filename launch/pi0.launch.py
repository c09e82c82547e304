"""Run pi0 on a robot: observation, policy and chunk-executor nodes (+ optional rviz).

    ros2 launch pi0_ros pi0.launch.py embodiment:=ur5e checkpoint:=/path/to/ckpt \
        prompt:="pick up the red cube" dry_run:=false

dry_run defaults to true: commands are computed and logged but nothing is sent to the robot.
realtime_chunking, noise_scale, num_steps (policy) and execute_steps (executor) come from the
checkpoint's inference.json unless config/params/<embodiment>.yaml sets them (README, Configure).
With backend:=remote server_uri:=ws://gpu-host:8000 the policy node is a client of an
openpi-protocol server (pi0-ros serve, or openpi's serve_policy.py with remote_keys:=aloha|droid|libero).
"""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue
from launch_ros.substitutions import FindPackageShare


def generate_launch_description() -> LaunchDescription:
    embodiment = LaunchConfiguration("embodiment")
    namespace = LaunchConfiguration("namespace")
    use_sim_time = ParameterValue(LaunchConfiguration("use_sim_time"), value_type=bool)
    params = PathJoinSubstitution([FindPackageShare("pi0_ros"), "config", "params", [embodiment, ".yaml"]])
    common = {"embodiment": embodiment, "use_sim_time": use_sim_time}
    return LaunchDescription([
        DeclareLaunchArgument("embodiment", default_value="trossen_bimanual",
                              description="Robot embodiment: a name from config/embodiments (pi0-ros embodiments)"),
        DeclareLaunchArgument("checkpoint", default_value="",
                              description="pi0 checkpoint directory (model.safetensors, config.json, tokenizer.model, "
                                          "assets/); empty = tiny preset with RANDOM weights"),
        DeclareLaunchArgument("prompt", default_value="", description="Initial task prompt (change it on /prompt)"),
        DeclareLaunchArgument("dry_run", default_value="true",
                              description="true: compute and log commands but publish nothing to the robot"),
        DeclareLaunchArgument("namespace", default_value="", description="ROS namespace for all pi0 nodes"),
        DeclareLaunchArgument("device", default_value="cpu", description="Torch device for the policy: cpu, cuda, cuda:N"),
        DeclareLaunchArgument("backend", default_value="local",
                              description="local: pi0 in the policy node; remote: an openpi-protocol server (server_uri)"),
        DeclareLaunchArgument("server_uri", default_value="ws://127.0.0.1:8000",
                              description="backend remote: the server's websocket URI (pi0-ros serve or openpi)"),
        DeclareLaunchArgument("remote_keys", default_value="",
                              description="backend remote: key set the server expects (aloha, droid, libero); "
                                          "empty = pi0_ros's own for pi0-ros serve"),
        DeclareLaunchArgument("use_sim_time", default_value="false", description="Use /clock (simulation)"),
        DeclareLaunchArgument("rviz", default_value="false", description="Start rviz2 with config/pi0.rviz"),
        Node(package="pi0_ros", executable="observation_node", name="pi0_observation", namespace=namespace,
             output="screen", parameters=[params, common, {"prompt": LaunchConfiguration("prompt")}]),
        Node(package="pi0_ros", executable="policy_node", name="pi0_policy", namespace=namespace, output="screen",
             parameters=[params, common, {"checkpoint": LaunchConfiguration("checkpoint"),
                                          "device": LaunchConfiguration("device"),
                                          "backend": LaunchConfiguration("backend"),
                                          "server_uri": LaunchConfiguration("server_uri"),
                                          "remote_keys": LaunchConfiguration("remote_keys")}]),
        Node(package="pi0_ros", executable="executor_node", name="pi0_executor", namespace=namespace, output="screen",
             parameters=[params, common, {"dry_run": ParameterValue(LaunchConfiguration("dry_run"), value_type=bool),
                                          # for execute_steps from the checkpoint's inference.json
                                          "checkpoint": LaunchConfiguration("checkpoint")}]),
        Node(package="pi0_ros", executable="viz_node", name="pi0_viz", namespace=namespace, output="screen",
             parameters=[params, common]),
        Node(package="rviz2", executable="rviz2", name="rviz2", output="screen",
             arguments=["-d", PathJoinSubstitution([FindPackageShare("pi0_ros"), "config", "pi0.rviz"])],
             parameters=[{"use_sim_time": use_sim_time}], condition=IfCondition(LaunchConfiguration("rviz"))),
    ])
