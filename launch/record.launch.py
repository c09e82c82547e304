"""Record an embodiment's topics with `ros2 bag record -s mcap` (the topic list comes from its YAML).

    ros2 launch pi0_ros record.launch.py embodiment:=trossen_bimanual output:=bags/run1

The topics are computed at launch time by pi0_ros.data.topics (cameras, joint states, odometry,
command outputs, /prompt, /action_chunk, /pi0_episode), so the bag always matches the robot.
For one bag per episode with prompt/success tags use `pi0-ros record` (or recorder_node)
instead; `pi0-ros bag2dataset` splits this bag on /pi0_episode markers if it holds any.
"""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, ExecuteProcess, OpaqueFunction
from launch.substitutions import LaunchConfiguration


def _record(context, *args, **kwargs):
    from pi0_ros.data.topics import record_topics

    embodiment = LaunchConfiguration("embodiment").perform(context)
    output = LaunchConfiguration("output").perform(context)
    topics = [topic for topic, _ in record_topics(embodiment)]
    cmd = ["ros2", "bag", "record", "-s", "mcap", "-o", output, *topics]
    return [ExecuteProcess(cmd=cmd, output="screen")]


def generate_launch_description() -> LaunchDescription:
    return LaunchDescription([
        DeclareLaunchArgument("embodiment", default_value="trossen_bimanual",
                              description="Embodiment whose topics are recorded (config/embodiments/<name>.yaml)"),
        DeclareLaunchArgument("output", default_value="recordings/bag",
                              description="Output bag directory for ros2 bag record -o (must not exist yet)"),
        OpaqueFunction(function=_record),
    ])
