"""Our command senders against the simulator's stand-ins of the real controllers, over DDS.

JointTrajectory topic and FollowJointTrajectory / GripperCommand action servers with
joint_trajectory_controller's and gripper_action_controller's acceptance rules (see
pi0_ros.controllers): trajectories are accepted and executed over time, superseded goals are not
faults, rejected and aborted goals call on_fault.
"""
from __future__ import annotations

import numpy as np
import pytest
import yaml
from rclpy.node import Node
from rclpy.parameter import Parameter
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from pi0_ros.robots.embodiment import embodiments_dir, load_embodiment
from pi0_ros.ros.commands import CommandPublishers
from pi0_ros.ros.sim_node import SimNode
from pi0_ros.trajectory import Trajectory

from harness import Graph, now

pytestmark = pytest.mark.ros
VARIANT = embodiments_dir() / "variants" / "trossen_bimanual_trajectory.yaml"


@pytest.fixture
def graph():
    g = Graph()
    yield g
    g.close()


def plan(emb, start: np.ndarray, target: np.ndarray, t0: float, end_velocity: float = 0.0,
         speed: float = 0.5) -> Trajectory:
    """What the executor's planner hands over: points `speed` x the velocity limit apart, velocities
    from the points, the last one at rest (unless told otherwise, to provoke a rejection)."""
    step = emb.max_velocity * emb.dt * speed
    k = max(2, int(np.ceil((np.abs(target - start) / step).max())))
    pos = start + np.outer(np.arange(1, k + 1) / k, target - start)
    vel = np.gradient(np.vstack([start, pos]), emb.dt, axis=0)[1:]
    vel[-1] = end_velocity
    return Trajectory(start=t0, times=emb.dt * np.arange(1, k + 1), positions=pos, velocities=vel)


def setup(graph, path, **sim_params):
    emb = load_embodiment(path)
    sim = graph.add(SimNode(**graph.params(embodiment=str(path), image_rate_hz=0.0, seed=0, **sim_params)))
    node = Node("cmd", context=graph.context, parameter_overrides=[Parameter("use_sim_time", value=True)])
    faults: list[tuple[str, str]] = []
    # Before the node spins, as the executor node does (CommandPublishers refuses otherwise).
    pubs = CommandPublishers(node, emb, dry_run=False, on_fault=lambda name, reason: faults.append((name, reason)))
    graph.add(node)
    # /clock arrives: the executor keeps sim time. A liveness bound, not a timing claim: under load
    # (three real-time collectors beside the suite, load average 20) the first 0.2 s of sim time took over 10 s.
    assert graph.wait_for(lambda: now(node) > 0.2, 30), (
        f"no /clock past 0.2 s: node time {now(node):.3f}, sim time {sim.sim_time:.3f}, "
        f"{sim.physics_ticks} physics ticks, sim thread alive {sim._thread.is_alive()}, "
        f"/clock publishers seen by the node {node.count_publishers('/clock')}")
    return emb, sim, node, pubs, faults


def tick(pubs, emb, target, traj=None):
    pubs.publish(emb.split_outputs(target), None, trajectory=traj)


def test_trajectory_topic_and_gripper_actions_against_the_controllers(graph):
    emb, sim, node, pubs, faults = setup(graph, VARIANT)
    start = sim.env.robot_state()
    target = start.copy()
    arm = list(emb.outputs[0].indices)
    target[arm] += np.array([0.25, -0.2, 0.2, 0.1, -0.1, 0.2])
    target[6] = 0.5 * (emb.dims[6].open + emb.dims[6].closed)   # left gripper half closed
    traj = plan(emb, start, target, now(node))
    tick(pubs, emb, target, traj)
    for _ in range(5):  # later ticks: no new trajectory, the same gripper target (no new goal)
        tick(pubs, emb, target, None)
    ctl = sim.controller_interfaces
    assert graph.wait_for(lambda: ctl.counts["left_arm"]["accepted"] == 1 and ctl.counts["right_arm"]["accepted"] == 1, 5)
    assert graph.wait_for(lambda: np.abs(sim.env.robot_state()[arm] - target[arm]).max() < 0.05, 10)
    assert graph.wait_for(lambda: pubs.counters()["left_gripper"]["succeeded"] == 1, 10), pubs.counters()
    c = pubs.counters()
    assert c["left_gripper"]["sent"] == 1 and c["left_arm"]["sent"] == 1  # one goal, one trajectory
    assert faults == [] and ctl.counts["left_arm"]["rejected"] == 0
    # A trajectory that is already over is never sent.
    old = plan(emb, start, target, now(node) - 5.0)
    tick(pubs, emb, target, old)
    assert pubs.counters()["left_arm"]["skipped_past"] == 1


def test_the_old_single_point_command_is_rejected_and_not_executed(graph):
    emb, sim, node, pubs, faults = setup(graph, VARIANT)
    o = emb.outputs[0]
    before = sim.env.targets[list(o.indices)]
    pub = node.create_publisher(JointTrajectory, o.topic, 10)
    msg = JointTrajectory(joint_names=list(o.joint_names),
                          points=[JointTrajectoryPoint(positions=(before + 0.05).tolist(), velocities=[1.0] * 6)])
    msg.points[0].time_from_start.nanosec = 50_000_000
    ctl = sim.controller_interfaces
    assert graph.wait_for(lambda: (pub.publish(msg), ctl.counts["left_arm"]["rejected"] >= 1)[1], 5)
    np.testing.assert_allclose(sim.env.targets[list(o.indices)], before)


def test_follow_joint_trajectory_goals_preempt_reject_and_gripper_abort(graph, tmp_path):
    spec = yaml.safe_load(VARIANT.read_text())
    for o in spec["outputs"]:
        if o["name"] == "left_arm":
            o["type"] = "control_msgs/action/FollowJointTrajectory"
            o["topic"] = "/follower_left/arm_controller/follow_joint_trajectory"
        if o["name"] == "left_gripper":
            o["params"].update(allow_stalling=False, goal_tolerance=0.01)   # gripper_action_controller's defaults
    path = tmp_path / "trossen_fjt.yaml"
    path.write_text(yaml.safe_dump(spec))
    emb, sim, node, pubs, faults = setup(graph, path)
    start = sim.env.robot_state()
    arm = list(emb.outputs[0].indices)
    mid, target = start.copy(), start.copy()
    mid[arm] += 0.1
    target[arm] += 0.2
    # Slow (a few seconds), so that the newer goal always finds it executing: at half the velocity
    # limit it lasted 0.08 s and, on a loaded machine, sometimes succeeded before the newer one came.
    tick(pubs, emb, start, plan(emb, start, mid, now(node), speed=0.01))
    assert graph.wait_for(lambda: len(sim.controller_interfaces._goals) >= 1, 5)  # accepted, executing
    tick(pubs, emb, start, plan(emb, start, target, now(node)))     # a newer chunk takes over
    assert graph.wait_for(lambda: pubs.counters()["left_arm"]["succeeded"] == 1, 10), pubs.counters()
    c = pubs.counters()["left_arm"]
    assert c["preempted"] == 1 and c["aborted"] == 0 and faults == []
    assert graph.wait_for(lambda: np.abs(sim.env.targets[arm] - target[arm]).max() < 1e-9, 2)  # holds the end
    # A goal JTC rejects (ends moving) -> fault.
    tick(pubs, emb, target, plan(emb, target, start, now(node), end_velocity=0.4))
    assert graph.wait_for(lambda: ("left_arm", "goal 3 rejected") in faults, 5), faults
    # Closing on nothing fully stalls short of the goal: aborted (allow_stalling false) -> fault.
    closed = target.copy()
    closed[6] = emb.dims[6].closed
    tick(pubs, emb, closed)
    assert graph.wait_for(lambda: any(n == "left_gripper" and "aborted" in r for n, r in faults), 10), faults
    assert pubs.counters()["left_gripper"]["aborted"] == 1


def test_action_clients_are_refused_on_a_node_that_already_spins(graph):
    """rclpy's ActionClient registers with its node before it makes its lock; a spinning executor
    polled it in between and its thread died (this file's setup then saw no /clock, 1 run in 17)."""
    emb = load_embodiment(VARIANT)
    spinning = graph.node("spinning")
    with pytest.raises(RuntimeError, match="already spins"):
        CommandPublishers(spinning, emb, dry_run=False)
    assert CommandPublishers(spinning, emb, dry_run=True).dry_run  # no action clients: allowed
    topics_only = load_embodiment("trossen_bimanual")
    assert not any(o.is_action for o in topics_only.outputs)
    CommandPublishers(spinning, topics_only, dry_run=False)  # publishers only: allowed


def test_dry_run_builds_trajectories_and_goals_but_sends_nothing(graph):
    emb, sim, node, _, _ = setup(graph, VARIANT)
    dry = CommandPublishers(node, emb, dry_run=True)
    start = sim.env.robot_state()
    target = start.copy()
    target[0] += 0.1
    target[6] = emb.dims[6].closed
    dry.publish(emb.split_outputs(target), None, trajectory=plan(emb, start, target, now(node)))
    msg = dry.last_messages["left_arm"]
    assert isinstance(msg, JointTrajectory) and len(msg.points) > 1
    assert list(msg.points[-1].velocities) == [0.0] * 6
    assert dry.last_messages["left_gripper"].command.position == pytest.approx(emb.dims[6].closed)
    graph.wait_for(lambda: False, 0.5)
    counts = sim.controller_interfaces.counts
    assert counts["left_arm"]["accepted"] == counts["left_arm"]["rejected"] == 0
    assert sim.env.controllers.grippers["left_gripper"].goals == {}


def test_interbotix_group_and_single_commands_as_the_aloha_stack_sends_them(graph, tmp_path):
    spec = yaml.safe_load((embodiments_dir() / "trossen_bimanual.yaml").read_text())
    for o in spec["outputs"]:
        side = o["name"].split("_")[0]
        if o["name"].endswith("arm"):
            o.update(type="interbotix_xs_msgs/msg/JointGroupCommand", group="arm",
                     topic=f"/follower_{side}/commands/joint_group")
        else:
            o.update(type="interbotix_xs_msgs/msg/JointSingleCommand", topic=f"/follower_{side}/commands/joint_single")
    path = tmp_path / "trossen_interbotix.yaml"
    path.write_text(yaml.safe_dump(spec))
    emb, sim, node, pubs, faults = setup(graph, path)
    target = np.clip(sim.env.robot_state(), emb.lower, emb.upper)  # a measured gripper can sit just outside
    target[0] += 0.1
    target[6] = 0.5 * (emb.dims[6].open + emb.dims[6].closed)
    tick(pubs, emb, target)
    msgs = pubs.last_messages
    assert msgs["left_arm"].name == "arm" and msgs["left_gripper"].name == "gripper"
    assert graph.wait_for(lambda: (tick(pubs, emb, target),
                                   np.abs(sim.env.targets - target).max() < 1e-5)[1], 5)  # float32 cmd


def test_franka_gripper_move_and_grasp_actions(graph, tmp_path):
    spec = yaml.safe_load((embodiments_dir() / "franka.yaml").read_text())
    for o in spec["outputs"]:
        if o["name"] == "gripper":  # franka_gripper's own actions instead of gripper_action
            o.update(type="franka_msgs/action/Grasp", topic="/fr3_gripper",
                     params={"force": 20.0, "epsilon_outer": 0.08, "deadband": 0.002})
    path = tmp_path / "franka_grasp.yaml"
    path.write_text(yaml.safe_dump(spec))
    emb, sim, node, pubs, faults = setup(graph, path)
    g = emb.dims[7]
    target = sim.env.robot_state()
    target[7] = g.open
    assert graph.wait_for(lambda: (tick(pubs, emb, target), pubs.counters()["gripper"]["sent"] == 1)[1], 5)
    assert graph.wait_for(lambda: pubs.counters()["gripper"]["succeeded"] == 1, 10), pubs.counters()  # move
    move = pubs.last_messages["gripper"]
    assert type(move).__name__ == "Move_Goal" and move.width == pytest.approx(2 * g.open)  # the finger gap
    target[7] = g.closed
    tick(pubs, emb, target)
    goal = pubs.last_messages["gripper"]
    assert type(goal).__name__ == "Grasp_Goal" and goal.width == pytest.approx(0.0) and goal.force == 20.0
    assert goal.epsilon.outer == pytest.approx(0.08)
    assert graph.wait_for(lambda: pubs.counters()["gripper"]["succeeded"] == 2, 10), (pubs.counters(), faults)
    assert faults == [] and sim.env.robot_state()[7] < 0.005
