"""Stand-ins for the robot-side controllers we command (ROS-free).

They apply exactly the acceptance rules of ros2_control's joint_trajectory_controller and the
FollowJointTrajectory / GripperCommand action servers, and say what the controller would
execute over time. The simulator drives MuJoCo through them; tests check our commands against them.
"""
from pi0_ros.controllers.actions import (FollowJointTrajectoryServer, FrankaGripperServer, GoalResult, GoalStatus,
                                         GripperCommandServer, GripperParams)
from pi0_ros.controllers.jtc import JtcEmulator, JtcParams, TrajectoryPoint, TrajectorySpec, validate

__all__ = ["FollowJointTrajectoryServer", "FrankaGripperServer", "GoalResult", "GoalStatus", "GripperCommandServer", "GripperParams",
           "JtcEmulator", "JtcParams", "TrajectoryPoint", "TrajectorySpec", "validate"]
