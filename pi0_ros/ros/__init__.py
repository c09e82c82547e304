"""The rclpy layer: message conversions and one file per node. Everything here is thin;
the logic lives in the ROS-free modules of pi0_ros."""
