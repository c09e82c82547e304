"""SimEnv: scenes, rendering, determinism, unit conversions, command tracking (no ROS)."""
import hashlib

import numpy as np
import pytest

from pi0_ros.robots.embodiment import load_embodiment
from pi0_ros.sim.bench import sim_steps_per_second
from pi0_ros.sim.env import SimEnv
from pi0_ros.sim.scenes import ALOHA_FINGER_CLOSED, ALOHA_FINGER_OPEN, SceneError, build_scene


@pytest.fixture(scope="module")
def aloha():
    env = SimEnv("trossen_bimanual", seed=0)
    yield env
    env.close()


def _hash(images):
    h = hashlib.sha256()
    for k in sorted(images):
        h.update(images[k].tobytes())
    return h.hexdigest()


def test_aloha_renders_three_cameras_non_black(aloha):
    aloha.reset(0)
    ims = aloha.render()
    assert set(ims) == {"base_0_rgb", "left_wrist_0_rgb", "right_wrist_0_rgb"}
    for slot, im in ims.items():
        assert im.shape == (224, 224, 3) and im.dtype == np.uint8, slot
        assert im.mean() > 20 and im.std() > 5, f"{slot} looks blank"
    # The two cubes are visible from the top camera: strong red and blue pixels.
    top = ims["base_0_rgb"].astype(int)
    assert ((top[..., 0] > 150) & (top[..., 1] < 80) & (top[..., 2] < 80)).sum() > 10
    assert ((top[..., 2] > 150) & (top[..., 0] < 80) & (top[..., 1] < 100)).sum() > 10


def test_joint_positions_use_yaml_names(aloha):
    emb = aloha.embodiment
    pos = aloha.joint_positions()
    assert set(pos) == set(emb.joint_state_sources)
    for d in emb.dims:
        assert d.joint in pos[d.source]
    state = aloha.robot_state()
    np.testing.assert_allclose(state, aloha.scene.home, atol=0.02)
    # Starts with open grippers: model convention 0.
    g = [i for i, k in enumerate(emb.kinds) if k == "gripper"]
    np.testing.assert_allclose(emb.to_model(state)[g], 0.0, atol=0.01)


def test_determinism_same_seed_same_trajectory_and_images():
    def run(seed):
        env = SimEnv("trossen_bimanual", seed=seed, image_size=64)
        traj, hashes = [], []
        rng = np.random.default_rng(123)
        for k in range(40):
            a = env.scene.home + np.where(np.array(env.embodiment.kinds) == "joint",
                                          0.3 * np.sin(0.1 * k + rng.uniform(0, 0.1, env.embodiment.num_dims)), 0)
            env.set_targets(a)
            env.step()
            traj.append(env.robot_state())
            if k % 10 == 0:
                hashes.append(_hash(env.render()))
        cubes = {n: env.object_position(n) for n in env.scene.objects}
        env.close()
        return np.array(traj), hashes, cubes, env.prompt

    t1, h1, c1, p1 = run(7)
    t2, h2, c2, p2 = run(7)
    np.testing.assert_array_equal(t1, t2)
    assert h1 == h2 and p1 == p2
    for n in c1:
        np.testing.assert_array_equal(c1[n], c2[n])
    _, _, c3, _ = run(8)
    assert any(np.linalg.norm(c1[n] - c3[n]) > 1e-3 for n in c1)


def test_gripper_conversion_round_trip_uses_yaml_constants(aloha):
    emb = load_embodiment("trossen_bimanual")
    for d, b in zip(emb.dims, aloha.scene.dims):
        if d.kind != "gripper":
            assert b.read_scale == 1.0 and b.read_offset == 0.0
            continue
        # YAML open <-> MJCF open finger slide, closed <-> closed.
        assert b.to_qpos(d.open) == pytest.approx(ALOHA_FINGER_OPEN)
        assert b.to_qpos(d.closed) == pytest.approx(ALOHA_FINGER_CLOSED)
        for x in np.linspace(d.closed, d.open, 7):
            assert b.to_robot(b.to_qpos(x)) == pytest.approx(x)
        # Both finger actuators: left = +slide, right = -slide.
        (a1, s1, o1), (a2, s2, o2) = b.actuators
        assert s1 * d.open + o1 == pytest.approx(ALOHA_FINGER_OPEN)
        assert s2 * d.open + o2 == pytest.approx(-ALOHA_FINGER_OPEN)
    # And the model convention through the embodiment: open -> 0, closed -> 1.
    v = aloha.scene.home.copy()
    gi = [i for i, k in enumerate(emb.kinds) if k == "gripper"]
    v[gi] = [emb.dims[i].closed for i in gi]
    np.testing.assert_allclose(emb.to_model(v)[gi], 1.0)


def test_commands_drive_joints(aloha):
    aloha.reset(1)
    emb = aloha.embodiment
    left = next(o for o in emb.outputs if o.name == "left_arm")
    home = aloha.scene.home[list(left.indices)]
    step = np.array([0.3, 0.2, -0.2, 0.3, 0.3, 0.4])
    aloha.set_command("left_arm", home + step)
    aloha.set_command({("left", "gripper"): emb.dims[6].closed})
    aloha.step(50)  # 1 s
    pos = aloha.joint_positions()["left"]
    got = np.array([pos[n] for n in left.joint_names])
    np.testing.assert_allclose(got, home + step, atol=0.05)
    assert pos["gripper"] == pytest.approx(emb.dims[6].closed, abs=0.1)
    # The right arm did not move.
    right = aloha.joint_positions()["right"]
    assert right["waist"] == pytest.approx(0.0, abs=0.02)
    assert right["gripper"] == pytest.approx(emb.dims[13].open, abs=0.05)
    # Limits are clipped like a driver would; wrong widths are refused.
    aloha.set_command("left_gripper", [99.0])
    assert aloha.targets[6] == pytest.approx(emb.dims[6].upper)
    with pytest.raises(ValueError):
        aloha.set_command("left_arm", [0.0] * 5)
    with pytest.raises(KeyError):
        aloha.set_command("nope", [0.0])


def test_time_advances_by_control_ticks(aloha):
    aloha.reset(0)
    assert aloha.time == 0.0 and aloha.n_substeps == 10
    aloha.step(25)
    assert aloha.time == pytest.approx(0.5)


@pytest.mark.parametrize("name,slots,ngrip", [("ur5e", 2, 1), ("franka", 2, 1)])
def test_single_arm_scenes_load_step_render(name, slots, ngrip):
    env = SimEnv(name, seed=3, image_size=96)
    emb = env.embodiment
    ims = env.render()
    assert len(ims) == slots
    for slot, im in ims.items():
        assert im.shape == (96, 96, 3) and im.mean() > 20 and im.std() > 5, slot
    state = env.robot_state()
    np.testing.assert_allclose(state, env.scene.home, atol=0.03)
    # A joint command is tracked and the gripper closes (reading in the YAML's units).
    gi = [i for i, k in enumerate(emb.kinds) if k == "gripper"]
    assert len(gi) == ngrip
    a = env.scene.home.copy()
    a[0] += 0.3
    a[gi] = [emb.dims[i].closed for i in gi]
    env.set_targets(a)
    env.step(int(1.5 * emb.control_rate_hz))
    s = env.robot_state()
    assert s[0] == pytest.approx(a[0], abs=0.05)
    g = emb.dims[gi[0]]
    assert abs(s[gi[0]] - g.closed) < 0.15 * abs(g.open - g.closed)
    # Cubes rest on the table.
    for n in env.scene.objects:
        assert env.object_position(n)[2] == pytest.approx(0.02, abs=0.005)
    env.close()


def test_unsupported_embodiment_is_refused():
    with pytest.raises(SceneError, match="no simulated scene"):
        build_scene("arx_bimanual")


def test_bench_function_returns_rate():
    assert sim_steps_per_second(ticks=5, warmup=1, image_size=32) > 0


def test_mobile_embodiment_reuses_aloha_with_kinematic_base():
    env = SimEnv("mobile_trossen_arx", seed=0, render=False)
    emb = env.embodiment
    assert emb.num_dims == 16
    a = env.scene.home.copy()
    a[14], a[15] = 0.2, 0.5   # base_vx, base_wz
    env.set_targets(a)
    env.step(50)
    s = env.robot_state()      # assembles by name incl. base velocity (as from odometry)
    assert s[14] == pytest.approx(0.2) and s[15] == pytest.approx(0.5)
    assert env.base_pose[2] == pytest.approx(0.5, abs=1e-6)
    assert env.base_pose[0] > 0.15
    env.reset(0)
    np.testing.assert_array_equal(env.base_pose, 0.0)
