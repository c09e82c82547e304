"""A separate process for the DDS round-trip test: echoes ActionChunk from /rt_in to /rt_out."""
import sys

import rclpy
from rclpy.node import Node

from pi0_ros.msg import ActionChunk


def main() -> None:
    rclpy.init()
    node = Node("rt_echo")
    pub = node.create_publisher(ActionChunk, "/rt_out", 10)
    node.create_subscription(ActionChunk, "/rt_in", pub.publish, 10)
    print("ready", flush=True)
    deadline = node.get_clock().now().nanoseconds + int(float(sys.argv[1]) * 1e9)
    while rclpy.ok() and node.get_clock().now().nanoseconds < deadline:
        rclpy.spin_once(node, timeout_sec=0.05)
    node.destroy_node()
    rclpy.shutdown()


if __name__ == "__main__":
    main()
