"""Session-wide test setup: isolate DDS traffic so parallel runs never see each other."""
import os

# Keep DDS discovery on loopback and give every pytest session its own domain.
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
if "ROS_DOMAIN_ID" not in os.environ:
    # Not a domain the tools' collectors and evaluations use, and none where nodes already run:
    # a test's simulated robot must never publish into a live graph (pi0_ros/ros/domain.py).
    from pi0_ros.ros.domain import free_domain_id

    os.environ["ROS_DOMAIN_ID"] = str(free_domain_id(seed=os.getpid()))
os.environ.setdefault("MUJOCO_GL", "egl")
