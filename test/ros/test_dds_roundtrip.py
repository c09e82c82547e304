"""ActionChunk crosses a real DDS link between two processes and comes back intact."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import rclpy
from rclpy.node import Node

from pi0_ros.msg import ActionChunk

pytestmark = pytest.mark.ros


def test_action_chunk_round_trip_two_processes():
    echo = subprocess.Popen([sys.executable, str(Path(__file__).with_name("echo_process.py")), "30"],
                            stdout=subprocess.PIPE, text=True, env=os.environ.copy())
    try:
        assert echo.stdout.readline().strip() == "ready"
        ctx = rclpy.Context()
        rclpy.init(context=ctx)
        node = Node("rt_test", context=ctx)
        got: list[ActionChunk] = []
        node.create_subscription(ActionChunk, "/rt_out", got.append, 10)
        pub = node.create_publisher(ActionChunk, "/rt_in", 10)
        executor = rclpy.executors.SingleThreadedExecutor(context=ctx)
        executor.add_node(node)

        H, D = 50, 14
        actions = np.random.default_rng(1).normal(size=(H, D))
        msg = ActionChunk()
        msg.header.stamp.sec, msg.header.stamp.nanosec = 1234, 567_000_000
        msg.header.frame_id = "base"
        msg.embodiment = "trossen_bimanual"
        msg.sequence, msg.observation_sequence = 42, 41
        msg.joint_names = [f"j{i}" for i in range(D)]
        msg.dt, msg.chunk_size, msg.action_dim = 0.02, H, D
        msg.actions = actions.ravel().tolist()
        msg.inference_ms, msg.latency_ms, msg.prompt = 12.5, 20.25, "pick up the red cube"

        deadline = time.monotonic() + 20
        while not got and time.monotonic() < deadline:  # discovery takes a moment
            pub.publish(msg)
            executor.spin_once(timeout_sec=0.1)
        assert got, "no ActionChunk came back over DDS within 20 s"
        r = got[0]
        assert (r.header.stamp.sec, r.header.stamp.nanosec, r.header.frame_id) == (1234, 567_000_000, "base")
        assert (r.embodiment, r.sequence, r.observation_sequence) == ("trossen_bimanual", 42, 41)
        assert list(r.joint_names) == msg.joint_names
        assert (r.dt, r.chunk_size, r.action_dim) == (0.02, H, D)
        np.testing.assert_array_equal(np.asarray(r.actions).reshape(H, D), actions)
        assert (r.inference_ms, r.latency_ms, r.prompt) == (12.5, 20.25, "pick up the red cube")
        executor.shutdown()
        node.destroy_node()
        rclpy.shutdown(context=ctx)
    finally:
        echo.kill()
        echo.wait()
