"""How a pick ended (pi0_ros.sim.grasp_report), on the simulator core without ROS: the scripted
expert's grasp, and the same grasp spoiled in each way a policy fails."""
from __future__ import annotations

import mujoco
import numpy as np
import pytest

from pi0_ros.sim.env import SimEnv
from pi0_ros.sim.expert import run_episode
from pi0_ros.sim.grasp_report import CLOSE_COMMANDED, OUTCOMES, GraspMonitor
from pi0_ros.sim.tasks import cube_name


@pytest.fixture(scope="module")
def ur5e():
    e = SimEnv("ur5e", seed=0, render=False)
    yield e
    e.close()


def _gripper(env: SimEnv) -> tuple[str, int]:
    (arm, g), = env.scene.gripper_dim.items()
    return arm, g


def _run(env: SimEnv, seed: int, spoil=None, target: str | None = None):
    """The expert's episode; ``spoil(env, command_model)`` may change the scene or the commands
    after the expert's commands are set and before the monitor looks."""
    m = GraspMonitor()

    def cb(e, action, images):
        if spoil is not None:
            spoil(e, e.embodiment.to_model(e.targets))
        m.update(e)

    r = run_episode(env, seed, target=target, callback=cb)
    return r, m.report(env.success())


@pytest.mark.parametrize("robot", ["ur5e", "franka", "trossen_bimanual"])
def test_the_experts_grasp_is_a_success_centred_on_the_cube(robot):
    env = SimEnv(robot, seed=0, render=False)
    try:
        r, rep = _run(env, 3)
    finally:
        env.close()
    assert r["success"] and rep.outcome == "success" and not rep.closed_empty, rep
    assert rep.max_lift >= env.task.lift_height
    # The expert closes with the cube between its fingers: within 1.5 cm on every pinch axis.
    assert set(rep.close_offset) == {"approach", "closing", "across"}
    assert max(abs(v) for v in rep.close_offset.values()) < 0.015, rep.close_offset


def test_a_cube_moved_across_the_fingers_is_a_grasp_that_closed_on_nothing(ur5e):
    arm, g = _gripper(ur5e)
    site = ur5e.scene.ee_sites[arm]
    moved = []

    def spoil(env, cmd):
        if not moved and cmd[g] >= CLOSE_COMMANDED:
            # The close is commanded: slide the cube 4 cm along the pinch frame's third axis (not
            # the closing axis), as a policy that aimed 4 cm off would leave it (still within touch).
            across = env.site_rotation(site)[:, 2]
            ob = env.scene.objects[cube_name(env.task.target)]
            env.data.qpos[ob.qpos_adr:ob.qpos_adr + 2] += 0.04 * across[:2] / np.linalg.norm(across[:2])
            mujoco.mj_forward(env.model, env.data)
            moved.append(True)

    r, rep = _run(ur5e, 3, spoil)
    assert moved and not r["success"]
    assert rep.outcome == "closed_empty" and rep.closed_empty, rep
    assert rep.close_offset["across"] == pytest.approx(_expert_offset(ur5e, 3)["across"] + 0.04, abs=0.01), rep
    assert abs(rep.close_offset["closing"]) < 0.015


def _expert_offset(env: SimEnv, seed: int) -> dict[str, float]:
    return _run(env, seed)[1].close_offset


def test_a_gripper_that_never_closes_is_no_close(ur5e):
    _, g = _gripper(ur5e)
    open_ = ur5e.embodiment.dims[g].open

    def spoil(env, cmd):
        t = env.targets
        t[g] = open_
        env.set_targets(t)

    r, rep = _run(ur5e, 4, spoil)
    assert not r["success"] and rep.outcome == "no_close" and rep.close_offset is None, rep


def test_opening_after_the_lift_is_a_drop(ur5e):
    _, g = _gripper(ur5e)
    open_ = ur5e.embodiment.dims[g].open

    def spoil(env, cmd):
        if env.task.heights(env)[env.task.target] > 0.08:
            t = env.targets
            t[g] = open_
            env.set_targets(t)

    r, rep = _run(ur5e, 5, spoil)
    assert not r["success"] and rep.outcome == "dropped" and rep.max_lift > 0.08, rep


def test_the_other_cube_picked_is_wrong_cube(ur5e):
    m = GraspMonitor()

    def cb(e, action, images):
        e.task.target = "blue"  # the expert planned for red; the prompt names blue
        m.update(e)

    run_episode(ur5e, 6, target="red", callback=cb)
    rep = m.report(ur5e.success("blue"))
    assert rep.outcome == "wrong_cube" and rep.close_offset is None, rep


def test_a_robot_that_stays_home_never_reached(ur5e):
    ur5e.reset(7)
    m = GraspMonitor()
    home = ur5e.scene.home.copy()
    for _ in range(20):
        ur5e.set_targets(home)
        ur5e.step()
        m.update(ur5e)
    rep = m.report(ur5e.success())
    assert rep.outcome == "never_reached" and rep.outcome in OUTCOMES, rep


def test_monitor_reset_forgets_the_last_episode(ur5e):
    m = GraspMonitor()
    run_episode(ur5e, 3, callback=lambda e, a, im: m.update(e))
    assert m.report(True).close_offset is not None
    m.reset()
    rep = m.report(False)
    assert (rep.outcome, rep.close_offset, rep.max_lift) == ("never_reached", None, 0.0)
