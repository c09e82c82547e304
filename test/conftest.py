"""Session-wide test setup: isolate DDS traffic so parallel runs never see each other."""
import os
import random

# Keep DDS discovery on loopback and give every pytest session its own domain.
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
os.environ.setdefault("ROS_DOMAIN_ID", str(random.Random(os.getpid()).randint(1, 100)))
os.environ.setdefault("MUJOCO_GL", "egl")
