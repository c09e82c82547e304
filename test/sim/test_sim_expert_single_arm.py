"""The scripted pick expert on the single-arm robots (UR5e + Robotiq 2F-85, Franka + hand), in the
SimEnv core without ROS: the same planner as ALOHA's, the robots differ only by the scene's data."""
import numpy as np
import pytest

from pi0_ros.sim.env import SimEnv
from pi0_ros.sim.expert import TAKEOVER_CLEARANCE, ArmIK, PickCubeExpert, rate_limit, run_episode

ROBOTS = ("ur5e", "franka")


@pytest.fixture(scope="module", params=ROBOTS)
def env(request):
    e = SimEnv(request.param, seed=0, render=False)
    yield e
    e.close()


def test_each_arm_has_its_gripper_and_pinch_site(env):
    scene, emb = env.scene, env.embodiment
    (arm, joints), = scene.arm_dims.items()
    g = scene.gripper_dim[arm]
    assert emb.dims[g].kind == "gripper" and all(emb.dims[i].kind == "joint" for i in joints)
    assert scene.ee_sites[arm]
    if emb.name == "franka":  # the hand publishes its own joint states: another source, same arm
        assert emb.dims[g].source != arm


@pytest.mark.parametrize("seed,color", [(0, "red"), (1, "blue"), (2, "red")])
def test_expert_picks_the_prompted_cube(env, seed, color):
    r = run_episode(env, seed, target=color)
    assert env.prompt == f"pick up the {color} cube"
    h = env.task.heights(env)
    assert r["success"], (env.embodiment.name, seed, color, h)
    assert r["ik_error"] < 1e-3
    other = "blue" if color == "red" else "red"
    assert not env.success(other) and not env.task.reached(env, other)
    assert h[color] > 0.1 and abs(h[other]) < 0.01


def test_plan_is_what_the_executor_sends_without_intervening(env):
    """Robot units within the YAML's limits, open gripper first and closed on the cube later, and
    no tick faster than max_velocity (the executor's step limit would drag it: an intervention)."""
    emb = env.embodiment
    for seed in range(4):
        env.reset(seed)
        ex = PickCubeExpert(env)
        a = ex.plan
        assert a.shape[1] == emb.num_dims
        assert np.all(a >= emb.lower - 1e-9) and np.all(a <= emb.upper + 1e-9)
        assert np.all(np.abs(np.diff(a, axis=0)) < emb.max_velocity * emb.dt), seed
        g = emb.dims[env.scene.gripper_dim[ex.arm]]
        gi = env.scene.gripper_dim[ex.arm]
        assert a[0, gi] == pytest.approx(g.open) and a[-1, gi] == pytest.approx(g.closed)
        np.testing.assert_allclose(a[0], env.scene.home, atol=1e-9)


def test_pinch_site_points_down_at_the_grasp(env):
    """The pinch site's frame convention (x = approach) holds on every robot: at the grasp the
    site is above the cube's centre by the scene's grasp offset with x pointing down."""
    import mujoco

    env.reset(5)
    ex = PickCubeExpert(env)
    k = int(round(ex.timeline.descend / env.embodiment.dt))
    ik_data = mujoco.MjData(env.model)
    ik_data.qpos[:] = env.data.qpos
    for i in env.scene.arm_dims[ex.arm]:
        ik_data.qpos[env.scene.dims[i].qpos_adr] = ex.plan[k, i]
    mujoco.mj_kinematics(env.model, ik_data)
    sid = mujoco.mj_name2id(env.model, mujoco.mjtObj.mjOBJ_SITE, env.scene.ee_sites[ex.arm])
    R = ik_data.site_xmat[sid].reshape(3, 3)
    cube = env.object_position(env.task.target_object)
    np.testing.assert_allclose(ik_data.site_xpos[sid], cube + [0, 0, env.scene.pick.grasp_offset], atol=2e-3)
    assert R[:, 0] @ [0, 0, -1] > 0.999 and abs(R[2, 1]) < 1e-2


def test_rate_limit_keeps_ticks_within_the_limit_and_others_exact():
    plan = np.array([[0.0, 0.0], [0.05, 1.0], [0.1, 1.0], [0.1, 1.0], [0.1, 1.0]])
    out = rate_limit(plan, np.array([0.1, 0.4]))
    np.testing.assert_array_equal(out[:, 0], plan[:, 0])   # within the limit: untouched
    np.testing.assert_allclose(out[:, 1], [0.0, 0.4, 0.8, 1.0, 1.0])


@pytest.mark.parametrize("seed", [4, 5])
def test_expert_takes_over_from_where_another_controller_left_the_arm(env, seed):
    """DAgger-style takeover: something else (here a scripted miss: the expert's own grasp aimed
    3 cm off and closed on nothing) moved the arm for the first seconds; the expert re-planned
    from the current joints starts there, not at home, and still picks the cube in time."""
    emb = env.embodiment
    env.reset(seed)
    miss = PickCubeExpert(env)
    # Aim the same plan 3 cm off along +y: the plan of a cube that is not there.
    env.data.qpos[env.scene.objects[env.task.target_object].qpos_adr + 1] += 0.03
    import mujoco
    mujoco.mj_forward(env.model, env.data)
    miss.reset()
    env.data.qpos[env.scene.objects[env.task.target_object].qpos_adr + 1] -= 0.03
    mujoco.mj_forward(env.model, env.data)
    takeover = int(round(2.4 / emb.dt))  # after the close: the gripper shut beside the cube
    for _ in range(takeover):
        for name, vals in emb.split_outputs(miss.act()).items():
            env.set_command(name, vals)
        env.step()
    # Missed: the cube is still on the table (the Franka's fingers may have pushed it aside).
    assert not env.success() and abs(env.task.heights(env)[env.task.target]) < 0.01
    start = env.measured_positions()
    expert = PickCubeExpert(env)
    expert.reset(start=start)
    arm = list(env.scene.arm_dims.values())[0]
    # The plan starts where the arm is (within one rate-limited tick), and counts from now.
    assert np.abs(expert.act()[arm] - start[arm]).max() <= (emb.max_velocity[arm] * emb.dt).max()
    assert expert.start_tick == env.tick
    # From the grasp height it shifts over at a low height and descends again, not back up to the
    # pre-grasp (a policy taught by takeovers would otherwise learn to back away from the cube).
    ik = ArmIK(env, expert.arm, env.scene.ee_sites[expert.arm])
    g = env.scene.gripper_dim[expert.arm]
    closed = emb.to_model(expert.plan)[:, g] >= 0.5
    reopened = int(np.argmin(closed))  # the first ticks re-open the gripper the miss closed
    close = reopened + int(np.argmax(closed[reopened:]))
    pinch = np.array([ik.forward(q[arm])[0] for q in expert.plan[:close]])  # until the close (then the lift)
    cube = env.object_position(env.task.target_object)
    grasp_z = cube[2] + expert.grasp_offset
    assert pinch[:, 2].max() <= max(pinch[0, 2], grasp_z + TAKEOVER_CLEARANCE) + 0.005
    assert pinch[:, 2].max() < grasp_z + expert.pregrasp_height - 0.03
    while env.tick < takeover + len(expert.plan):
        for name, vals in emb.split_outputs(expert.act()).items():
            env.set_command(name, vals)
        env.step()
        if env.success():
            break
    assert env.success(), env.task.heights(env)
    with pytest.raises(ValueError, match="start must have"):
        expert.reset(start=start[:3])


@pytest.mark.parametrize("seed", [4, 5])
def test_a_takeover_at_the_grasp_closes_there_without_backing_away(env, seed):
    """Taken over with the fingers around the cube (a policy about to close, a few mm off), the expert
    closes within a second and never rises: takeover data from such states must not teach a policy
    to back away or pause before closing (measured: trained on takeovers that rose 4 cm and took the
    from-home plan's 2.5 s to close, the policy hovered and closed on nothing or not at all)."""
    emb = env.embodiment
    env.reset(seed)
    first = PickCubeExpert(env)
    g = env.scene.gripper_dim[first.arm]
    close = int(np.argmax(emb.to_model(first.plan)[:, g] >= 0.5))
    while env.tick < close - 3:
        for name, vals in emb.split_outputs(first.act()).items():
            env.set_command(name, vals)
        env.step()
    start = env.measured_positions()
    expert = PickCubeExpert(env)
    expert.reset(start=start)
    arm = env.scene.arm_dims[expert.arm]
    ik = ArmIK(env, expert.arm, env.scene.ee_sites[expert.arm])
    closes = np.flatnonzero(emb.to_model(expert.plan)[:, g] >= 0.5)
    assert closes[0] * emb.dt <= 1.0
    z0 = ik.forward(start[arm])[0][2]
    assert max(ik.forward(q[arm])[0][2] for q in expert.plan[: closes[0]]) <= z0 + 0.005
    while env.tick < close - 3 + len(expert.plan) and not env.success():
        for name, vals in emb.split_outputs(expert.act()).items():
            env.set_command(name, vals)
        env.step()
    assert env.success()
