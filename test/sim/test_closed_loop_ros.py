"""Closed-loop episodes in the simulator through the real ROS nodes (in one process):
the scripted expert succeeds through the executor path, and the tiny random pi0 drives the
simulated robot safely (chunks flow, commands reach the sim, the joints track them)."""
from __future__ import annotations

import numpy as np
import pytest

from pi0_ros.ros.sim_session import SimSession
from pi0_ros.sim.grasp_report import OUTCOMES

pytestmark = [pytest.mark.ros, pytest.mark.slow]


def test_scripted_expert_succeeds_through_ros_pipeline():
    s = SimSession("trossen_bimanual", "pick_cube", scripted=True, seed=0)
    try:
        s.wait_ready()
        for seed, prompt in [(11, "pick up the red cube"), (11, "pick up the blue cube")]:
            r = s.run_episode(seed, prompt=prompt)
            assert r.success, r
            assert r.prompt == prompt and r.chunks >= 3
            assert not {"non_finite", "bad_shape"} & set(r.interventions)
    finally:
        s.close()


def test_tiny_random_policy_drives_sim_safely():
    from pi0_ros.policy import Policy

    s = SimSession("trossen_bimanual", "pick_cube", policy=Policy.tiny_random(seed=0), seed=0)
    ex = s.executor_node
    emb = ex.embodiment
    commanded, measured = [], []

    def record(session):
        with ex._lock:
            if ex.last_result is not None and ex.last_result.commands is not None:
                commanded.append(ex.core.last_values.copy())
                m = ex._measured()
                measured.append(None if m is None else m.copy())

    try:
        s.wait_ready()
        r = s.run_episode(3, max_time=4.0, stop_on_success=False, on_step=record)
    finally:
        s.close()
    assert r.chunks >= 3, r  # chunks flowed and were executed
    assert ex.commands.published > 50  # commands reached the command topics
    cmd = np.array(commanded)
    assert np.all(np.isfinite(cmd)) and np.all(cmd >= emb.lower - 1e-9) and np.all(cmd <= emb.upper + 1e-9)
    # The simulated joints track the commands (after a settling delay). Samples are every ~50 ms
    # of wall time; under CPU load the sim's delay in samples varies, so take the best lag in
    # 0..300 ms. Judged on the joints that carry each arm (waist, shoulder, elbow): the random
    # policy drives the grippers into the table, and the contact then holds the wrist joints far
    # from their commands (measured: right_wrist_angle held at -0.8 rad while commanded +0.3), so
    # their correlation is physics, not the command path (-0.28 to 0.9 over 12 runs beside two
    # busy processes; in one CI run it pulled the all-joint median to 0.79). The carrying
    # joints' median was 0.93-0.96 over those 12 runs.
    arm = np.array([d.kind == "joint" and d.name.split("_")[-1] in ("waist", "shoulder", "elbow")
                    for d in emb.dims])
    assert arm.sum() == 6, [d.name for d in emb.dims]
    best = None
    for lag in range(0, 7):
        pairs = [(c, m) for c, m in zip(commanded[:len(commanded) - lag], measured[lag:]) if m is not None]
        c = np.array([p[0][arm] for p in pairs])
        m = np.array([p[1][arm] for p in pairs])
        moving = c.std(axis=0) > 0.02
        assert moving.sum() >= 4, c.std(axis=0)  # the random policy does move the arms
        corr = [np.corrcoef(c[:, j], m[:, j])[0, 1] for j in np.flatnonzero(moving)]
        if best is None or np.median(corr) > np.median(best[1]):
            best = (lag, corr)
    print("tracking correlation per moving carrying joint:", np.round(best[1], 3), "at lag", best[0])
    assert np.median(best[1]) > 0.8, best
    assert r.interventions.get("non_finite", 0) == 0
    assert r.outcome in OUTCOMES and r.outcome != "success", r  # random weights pick nothing
