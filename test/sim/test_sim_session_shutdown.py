"""A SimSession episode ends at once when the ROS context is shut down from outside (rclpy's
Ctrl-C handler does that in eval/demo), instead of spinning until its wall-clock guard."""
from __future__ import annotations

import threading
import time

import pytest
import rclpy
from rclpy.executors import ExternalShutdownException

from pi0_ros.ros.sim_session import SimSession

pytestmark = [pytest.mark.ros, pytest.mark.slow]


def test_episode_stops_when_the_context_is_shut_down():
    s = SimSession("trossen_bimanual", "pick_cube", scripted=True, seed=0, extra={"sim": {"image_size": 96}})
    try:
        s.wait_ready()
        timer = threading.Timer(1.0, rclpy.shutdown, kwargs={"context": s.context})
        timer.start()
        t0 = time.monotonic()
        with pytest.raises(ExternalShutdownException):
            s.run_episode(4, max_time=60.0, stop_on_success=False)
        # The episode had 60 s of sim time and a 330 s wall guard left: compare with those.
        assert time.monotonic() - t0 < 30.0
    finally:
        s.close()
