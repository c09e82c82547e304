"""run_node (every node's main()): Ctrl-C racing a callback is a clean stop, a real error is not.

Run in a child process: run_node owns rclpy's default context."""
from __future__ import annotations

import subprocess
import sys
import textwrap

CHILD = textwrap.dedent("""
    import sys
    import rclpy
    from rclpy.node import Node
    from std_msgs.msg import String
    from pi0_ros.ros.common import run_node

    class Racing(Node):
        # What Ctrl-C does to a node whose timer fired just before: rclpy's signal handler shuts
        # the context down, then the callback the executor already took publishes.
        def __init__(self):
            super().__init__("racing")
            self.pub = self.create_publisher(String, "race", 1)
            self.create_timer(0.01, self.tick)

        def tick(self):
            if sys.argv[1] == "shutdown":
                rclpy.shutdown()
            elif sys.argv[1] == "bug":
                raise RuntimeError("a real bug in a callback")
            self.pub.publish(String(data="x"))

    run_node(Racing, [])
    print("CLEAN EXIT")
""")


def _run(mode: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", CHILD, mode], capture_output=True, text=True, timeout=60)


def test_publish_after_ctrl_c_shut_the_context_down_is_a_clean_stop():
    """Defect: under load the executor's diagnostics timer published after Ctrl-C and the node
    exited 1 with an RCLError traceback ("publisher's context is invalid")."""
    r = _run("shutdown")
    assert r.returncode == 0, r.stderr
    assert "CLEAN EXIT" in r.stdout and "Traceback" not in r.stderr


def test_an_error_in_a_callback_with_the_context_alive_still_fails_the_node():
    r = _run("bug")
    assert r.returncode != 0
    assert "a real bug in a callback" in r.stderr
