"""Action labels of dims whose output is an action (GripperCommand): the executor's commanded
targets, recorded on /pi0_executor/commanded, not the next measured state.

A gripper closing on a cube stalls half-way (0.44 on the UR5e's Robotiq, commanded 0.79): a
label from the measured state would teach the policy to aim where the gripper stalled, i.e. to
hold the cube with no force. One real demonstration through the ROS path (collect) shows it."""
from __future__ import annotations

import glob
import subprocess
import sys

import numpy as np
import pytest

from pi0_ros.data.topics import COMMANDED_TOPIC, record_topics
from pi0_ros.robots.embodiment import load_embodiment

pytestmark = [pytest.mark.ros, pytest.mark.slow]


def test_commanded_topic_is_recorded_where_an_output_is_an_action():
    assert (COMMANDED_TOPIC, "sensor_msgs/msg/JointState") in record_topics("ur5e")     # Robotiq: GripperCommand
    assert (COMMANDED_TOPIC, "sensor_msgs/msg/JointState") in record_topics("franka")   # franka_gripper actions
    assert COMMANDED_TOPIC not in dict(record_topics("trossen_bimanual"))                # every output a topic


def test_gripper_action_labels_come_from_the_commanded_targets(tmp_path, monkeypatch):
    import pyarrow.parquet as pq

    monkeypatch.setenv("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    monkeypatch.setenv("ROS_DOMAIN_ID", "57")
    monkeypatch.setenv("MUJOCO_GL", "egl")
    bags, out = tmp_path / "bags", tmp_path / "dataset"
    cli = [sys.executable, "-m", "pi0_ros.cli"]
    subprocess.run(cli + ["collect", "--embodiment", "ur5e", "--episodes", "1", "--seed", "5", "--out", str(bags)],
                   check=True, capture_output=True, timeout=600)
    subprocess.run(cli + ["bag2dataset", *glob.glob(str(bags / "episode_*")), "--embodiment", "ur5e",
                          "--out", str(out)], check=True, capture_output=True, timeout=600)
    table = pq.read_table(glob.glob(str(out / "data" / "*" / "*.parquet"))[0]).to_pydict()
    actions, state = np.array(table["action"]), np.array(table["observation.state"])
    emb = load_embodiment("ur5e")
    g = emb.dim_names.index(next(dn for o in emb.outputs if o.is_action for dn in o.dims))
    closed = max(emb.lower[g], emb.upper[g], key=abs)
    # The expert commands a full close; the gripper stalls on the cube well before it.
    assert actions[:, g].max() == pytest.approx(closed, abs=0.02)
    assert state[:, g].max() < actions[:, g].max() - 0.1
