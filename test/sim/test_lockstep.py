"""Lockstep evaluation: the simulator stands still while the policy infers.

SimNode.pause()/resume() freeze physics and sim time but keep joint states and /clock coming at
the frozen stamp (the executor's joint-state watchdog runs on receipt time); SimSession(lockstep=
True) holds the sim while the policy node infers. A deliberately slow policy shows the
difference: sim time advanced during an inference is ~0 in lockstep, and grows without it."""
from __future__ import annotations

import time

import numpy as np
import pytest
from rclpy.qos import qos_profile_sensor_data
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import Image, JointState

from pi0_ros.policy import PolicyOutput

from test_sim_node import sim_node, spin_until

pytestmark = [pytest.mark.ros, pytest.mark.slow]


def _stamp(msg) -> float:
    return msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9


def test_paused_sim_stands_still_but_keeps_publishing_joint_states():
    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    with sim_node(image_size=64, image_rate_hz=10.0) as (ctx, node):
        probe = rclpy.create_node("pause_probe", context=ctx)
        ex = SingleThreadedExecutor(context=ctx)
        ex.add_node(probe)
        got = {"js": [], "img": [], "clock": []}
        probe.create_subscription(JointState, "/follower_left/joint_states", got["js"].append, qos_profile_sensor_data)
        probe.create_subscription(Image, "/cam_high/image_raw", got["img"].append, qos_profile_sensor_data)
        probe.create_subscription(Clock, "/clock", got["clock"].append, 10)
        try:
            assert spin_until(ex, lambda: len(got["img"]) >= 2 and len(got["js"]) > 5)
            assert node.pause() and node.paused
            t0 = node.sim_time
            spin_until(ex, lambda: False, timeout=0.2)  # what was in flight arrives
            n_js, n_img = len(got["js"]), len(got["img"])
            spin_until(ex, lambda: False, timeout=0.6)  # three watchdog timeouts long
            assert node.sim_time == t0                                    # physics and time stand still
            frozen = got["js"][n_js:]
            assert len(frozen) >= 5                                       # joint states keep coming ...
            assert {round(_stamp(m), 9) for m in frozen} == {round(t0, 9)}  # ... at the frozen stamp
            assert len(got["img"]) == n_img                               # no new images
            assert got["clock"][-1].clock == got["js"][-1].header.stamp
            node.resume()
            assert spin_until(ex, lambda: node.sim_time > t0 + 0.1)      # and time runs again
        finally:
            ex.shutdown()
            probe.destroy_node()


class SlowHold:
    """Holds the current position and takes `delay` s per chunk; records how much sim time
    passed during each inference (the Policy interface of pi0_ros.policy)."""

    random_weights = False
    action_dim = 32
    chunk_size = 50

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.sim = None
        self.advances: list[float] = []

    def warmup(self, n: int = 0) -> list:
        return []

    def infer(self, inp, noise=None) -> PolicyOutput:
        t0 = self.sim.sim_time
        time.sleep(self.delay)
        self.advances.append(self.sim.sim_time - t0)
        return PolicyOutput(actions=np.repeat(np.asarray(inp.state, float)[None], self.chunk_size, axis=0),
                            timing={"model": self.delay * 1e3})


def _advances(lockstep: bool) -> tuple[list[float], float, int]:
    from pi0_ros.ros.sim_session import SimSession

    policy = SlowHold(delay=0.4)
    s = SimSession("trossen_bimanual", "pick_cube", policy=policy, seed=0, lockstep=lockstep,
                   extra={"sim": {"image_size": 96}})
    policy.sim = s.sim
    try:
        s.wait_ready()
        ex = s.executor_node
        n0, acc0 = len(policy.advances), ex.core.scheduler.counters.accepted
        # Stale-joint-state holds once the episode runs (the reset itself holds on purpose).
        holds: list[int] = []

        def record(session) -> None:
            if ex.core.scheduler.counters.accepted > acc0:
                holds.append(ex.core.holds.get("joint_states_stale", 0))

        r = s.run_episode(3, max_time=1.5, stop_on_success=False, on_step=record)
        assert r.chunks >= 2, r
        return policy.advances[n0:], s.sim.embodiment.dt, holds[-1] - holds[0]
    finally:
        s.close()


def test_lockstep_freezes_sim_time_during_inference():
    lock, dt, stale = _advances(lockstep=True)
    real, _, _ = _advances(lockstep=False)
    assert len(lock) >= 2 and len(real) >= 2
    # Lockstep: at most the tick already in progress when inference started (the sim checks
    # before each tick); real time: the sim runs on for the whole inference.
    assert max(lock) <= dt + 1e-9, lock
    assert np.median(real) > 3 * dt, real
    assert stale == 0  # the executor saw live joint states throughout the pauses


def test_lockstep_ticks_the_executor_once_per_physics_tick_at_sim_time():
    """In lockstep the simulator ticks the executor (tick_source external) after every physics
    step, at the step's sim time, and steps again only once it has taken that tick's commands:
    the executor's clock cannot lag the robot, no tick is missed or doubled, even when the
    process is busy (a thread burning the GIL here)."""
    import threading

    from pi0_ros.ros.sim_session import SimSession

    policy = SlowHold(delay=0.05)
    s = SimSession("trossen_bimanual", "pick_cube", policy=policy, seed=0, lockstep=True,
                   extra={"sim": {"image_size": 96}})
    policy.sim = s.sim
    stop = threading.Event()

    def burn() -> None:
        while not stop.is_set():
            sum(range(10_000))

    burner = threading.Thread(target=burn, daemon=True)
    try:
        assert s.executor_node.external_ticks and not s.executor_node._thread.is_alive()
        s.wait_ready()
        ex, sim = s.executor_node, s.sim
        seen: list[tuple[float, float]] = []
        sim.tick_hooks.append(lambda t: seen.append((t, ex._external_now)))  # after ex.step
        burner.start()
        assert sim.pause()  # counters read while the sim thread stands between two ticks
        ticks0, phys0 = ex.ticks, sim.physics_ticks
        sim.resume()
        r = s.run_episode(3, max_time=1.0, stop_on_success=False)
        assert r.chunks >= 2, r
        assert sim.pause()
        assert ex.ticks - ticks0 == sim.physics_ticks - phys0 >= 50
        assert all(abs(t - now) < 1e-9 for t, now in seen)  # each tick at the step's own sim time
        assert s.late_deliveries == 0
        sent = ex.commands.counters()
        assert sum(c["sent"] for c in sent.values()) > 0
        # The last tick's commands may still be in flight when the sim stands still (pause() stops
        # between ticks; the lockstep hold waits for them before the next one): none may be lost.
        deadline = time.monotonic() + 10.0
        while (any(sim.commands_received[n] < c["sent"] for n, c in sent.items())
               and time.monotonic() < deadline):
            time.sleep(0.01)
        assert all(sim.commands_received[n] == c["sent"] for n, c in sent.items())  # none lost or doubled
    finally:
        stop.set()
        s.close()


def test_external_tick_source_needs_step_and_rejects_unknown_values():
    import rclpy
    from rclpy.parameter import Parameter

    from pi0_ros.ros.executor_node import ExecutorNode

    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    try:
        node = ExecutorNode(context=ctx, parameter_overrides=[Parameter("tick_source", value="external")])
        try:
            assert not node._thread.is_alive()
            node.step(12.5)  # no joint states yet: holds, publishes nothing, does not raise
            assert node.ticks == 1 and node.last_result.held and node._now() == 12.5
        finally:
            node.destroy_node()
        wall = ExecutorNode(context=ctx)
        try:
            with pytest.raises(RuntimeError, match="tick_source"):
                wall.step(1.0)
        finally:
            wall.destroy_node()
        with pytest.raises(ValueError, match="tick_source"):
            ExecutorNode(context=ctx, parameter_overrides=[Parameter("tick_source", value="sim")])
    finally:
        rclpy.try_shutdown(context=ctx)
