"""Closed-loop episodes in the simulator through the real ROS nodes, in one process.

SimNode (physics + cameras + joint states, publishing /clock) + observation + policy +
executor nodes, all on sim time. Used by `pi0-ros eval`, `pi0-ros demo` and the tests.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import rclpy
from rclpy.executors import ExternalShutdownException

from pi0_ros.ros.bringup import Bringup
from pi0_ros.sim.grasp_report import GraspMonitor

LOCKSTEP_MAX_HOLD = 3.0  # s of wall time one unanswered chunk request may hold the simulator
LOCKSTEP_MAX_DELIVERY = 0.5  # s of wall time the simulator waits for the executor's commands of one tick
SAFETY_KEYS = ("clamp", "step_limit", "non_finite", "bad_shape", "estop", "no_reference", "invalid_measured")


@dataclass
class EpisodeResult:
    seed: int
    prompt: str
    success: bool
    time_to_success: float | None      # s of sim time, None when it failed
    duration: float                    # s of sim time run
    chunks: int                        # chunks accepted by the executor
    interventions: dict[str, int] = field(default_factory=dict)  # safety interventions (excl. holds)
    rejected_chunks: int = 0
    target: str = ""                   # the cube the prompt names
    reached_target: bool = False       # a gripper came within 3 cm of the named cube (touch)
    reached_other: bool = False        # ... of a cube the prompt did NOT name
    outcome: str = ""                  # how it ended: pi0_ros.sim.grasp_report.OUTCOMES
    close_offset: dict[str, float] | None = None  # named cube - pinch point at the first close there (m)

    def to_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()


class SimSession:
    def __init__(self, embodiment: str = "trossen_bimanual", task: str = "pick_cube", *, policy: Any = None,
                 checkpoint: str = "", scripted: bool = False, seed: int = 0, image_rate_hz: float = 15.0,
                 trigger: str = "request", extra: dict[str, dict[str, Any]] | None = None,
                 lockstep: bool = False) -> None:
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        extra = {k: dict(v) for k, v in (extra or {}).items()}
        extra.setdefault("sim", {}).update({"task": task, "seed": seed, "image_rate_hz": image_rate_hz,
                                            "use_sim_time": False})  # the sim IS the clock
        extra.setdefault("policy", {}).setdefault("warmup_runs", 1)
        if lockstep:
            # The simulator stands still while a request is open (below), so the newest camera
            # frame is at most one image period old: infer on it, not on an older observation
            # still queued behind a slow pipeline (the policy waits for the fresh one).
            extra["policy"].setdefault("max_observation_age", 1.5 / image_rate_hz)
            # The simulator ticks the executor (below), not the executor's own wall clock.
            extra.setdefault("executor", {})["tick_source"] = "external"
        self.scripted = scripted
        # dry_run False: the commands must reach the simulator (the executor defaults to dry run).
        self.bringup = Bringup(embodiment, checkpoint=checkpoint, dry_run=False, sim=True, use_sim_time=True,
                               trigger=trigger, policy=policy, extra=extra, context=self.context)
        if scripted:
            # The expert needs the simulator object: build the sim first, then hand it over.
            self.bringup.policy = _DeferredScripted()
        self.bringup.start()
        self.sim = self.bringup.nodes["sim"]
        if scripted:
            from pi0_ros.sim.scripted_policy import ScriptedPolicy

            scripted_policy = ScriptedPolicy(self.sim.env, lambda: self.sim.episode_start_time)
            self.sim.reset_hooks.append(scripted_policy.on_reset)
            self.bringup.policy.target = scripted_policy
        self.executor_node = self.bringup.nodes["executor"]
        self.policy_node = self.bringup.nodes["policy"]
        self.observation_node = self.bringup.nodes["observation"]
        self.lockstep = lockstep
        if lockstep:
            from pi0_ros.msg import PolicyStatus

            # The simulator stands still from the moment the executor asks for the next chunk
            # until it has one (the policy node is INFERRING within that span), so the success
            # rate measures the policy, not how fast this computer runs it: the observation
            # pipeline (decode, resize, DDS) is covered too, not only the model. The sim thread
            # checks before each tick: at most the tick in progress runs on. A request that gets
            # no answer holds the sim LOCKSTEP_MAX_HOLD s of wall time at most (never a deadlock).
            inferring = PolicyStatus.INFERRING
            scheduler = self.executor_node.core.scheduler
            self._held_since: float | None = None
            ex, sim = self.executor_node, self.sim
            # One executor tick per physics tick, at the simulator's time, on the sim thread: the
            # executor's clock cannot lag the simulated robot (/clock received late under load)
            # and no tick is missed or doubled. The next physics tick waits until the simulator
            # has taken the commands of this one (they travel through DDS like on a robot).
            sim.tick_hooks.append(ex.step)
            counted = sim.topic_outputs  # taken on topics, so countable per tick
            self._delivery_since: float | None = None
            self.late_deliveries = 0  # ticks that went on without all commands (never expected)

            def undelivered() -> bool:
                sent = ex.commands.sent_counts()  # checked every millisecond while held: no dicts of dicts
                if all(sim.commands_received[n] >= sent[n] for n in counted):
                    self._delivery_since = None
                    return False
                t = time.monotonic()
                if self._delivery_since is None:
                    self._delivery_since = t
                if t - self._delivery_since < LOCKSTEP_MAX_DELIVERY:
                    return True
                self.late_deliveries += 1
                self._delivery_since = None
                sim.get_logger().warning(f"lockstep: the executor's commands did not arrive within "
                                         f"{LOCKSTEP_MAX_DELIVERY} s; stepping on ({self.late_deliveries} times)")
                return False

            def hold() -> bool:
                if undelivered():
                    return True
                if self.policy_node.status_msg.state == inferring:
                    return True
                if scheduler.request_outstanding:
                    t = time.monotonic()
                    if self._held_since is None:
                        self._held_since = t
                    return t - self._held_since < LOCKSTEP_MAX_HOLD
                self._held_since = None
                return False

            self.sim.hold_conditions.append(hold)

    def spin(self, seconds: float, until=None) -> None:
        self.bringup.spin_for(seconds, until)

    def wait_ready(self, timeout: float = 120.0) -> None:
        from pi0_ros.msg import PolicyStatus

        ok = lambda: self.policy_node.status_msg.state in (PolicyStatus.READY, PolicyStatus.INFERRING)  # noqa: E731
        self.spin(timeout, ok)
        if not ok():
            raise RuntimeError(f"policy not ready: {self.policy_node.status_msg.state_name} "
                               f"{self.policy_node.status_msg.last_error}")

    def run_episode(self, seed: int, prompt: str | None = None, max_time: float | None = None,
                    stop_on_success: bool = True, on_step=None) -> EpisodeResult:
        """Reset the scene with `seed` (and optionally a prompt), run until success or max_time."""
        sim, ex = self.sim, self.executor_node
        # As on a real robot: stop commanding, let commands in flight land, then move the scene.
        # (The executor sends nothing while it has no joint-state reference.)
        ex.reset_episode(float("inf"))
        time.sleep(0.1)
        prompt = sim.reset_episode(seed, prompt=prompt)
        # Messages still in flight describe the scene before the reset: drop them everywhere.
        self.observation_node.reset(prompt, since=sim.sim_time)
        self.policy_node.reset_chunking()
        ex.reset_episode(sim.sim_time)
        with ex._lock:
            before = dict(ex.core.safety.counters)
            acc0, rej0 = ex.core.scheduler.counters.accepted, sum(ex.core.rejected.values())
        max_time = max_time if max_time is not None else sim.env.task.duration_s
        t_success = None
        task = sim.env.task
        target = task.target
        grasp = GraspMonitor()  # also tracks whether a gripper touched the named / the other cube
        # Never hang if the sim stalls; time it stood still on purpose (lockstep) does not count.
        wall_end = time.monotonic() + max_time * 5 + 30 - sim.held_s
        while sim.env.time < max_time and time.monotonic() < wall_end + sim.held_s:
            self.spin(0.05)
            if not self.bringup.ok():
                # Shut down from outside (rclpy's Ctrl-C handler): the nodes are gone, stop now
                # rather than spin until the wall-clock guard.
                raise ExternalShutdownException("the ROS context was shut down during the episode")
            if on_step is not None:
                on_step(self)
            grasp.update(sim.env)
            if t_success is None and sim.env.success():
                t_success = sim.env.time
                if stop_on_success:
                    break
        after = ex.core.safety.counters
        report = grasp.report(t_success is not None)
        interventions = {k: after.get(k, 0) - before.get(k, 0) for k in SAFETY_KEYS}
        return EpisodeResult(seed=seed, prompt=prompt, success=t_success is not None, time_to_success=t_success,
                             duration=sim.env.time, chunks=ex.core.scheduler.counters.accepted - acc0,
                             interventions={k: v for k, v in interventions.items() if v},
                             rejected_chunks=sum(ex.core.rejected.values()) - rej0, target=target,
                             reached_target=grasp.reached_target, reached_other=grasp.reached_other,
                             outcome=report.outcome, close_offset=report.close_offset)

    def close(self) -> None:
        self.bringup.stop()
        rclpy.try_shutdown(context=self.context)


class _DeferredScripted:
    """Stands in for the scripted policy until the simulator exists (same Policy interface)."""

    random_weights = False
    target: Any = None
    action_dim = 32

    def warmup(self, n: int = 0):
        return []

    def infer(self, inp, noise=None):
        return self.target.infer(inp, noise)

    def __repr__(self) -> str:
        return repr(self.target)
