"""ChunkExecutor (ROS-free): episode resets and chunk requests."""
from __future__ import annotations

import numpy as np

from pi0_ros.executor import ChunkExecutor
from pi0_ros.robots.embodiment import load_embodiment


def offer(ex: ChunkExecutor, stamp: float, now: float, value: float = 0.0) -> str | None:
    emb = ex.embodiment
    return ex.offer_chunk(embodiment=emb.name, joint_names=emb.dim_names, actions=np.full((50, emb.num_dims), value),
                          stamp=stamp, dt=emb.dt, seq=0, now=now)


def test_reset_rejects_chunks_from_before_it_and_asks_again_at_once() -> None:
    emb = load_embodiment("ur5e")
    ex = ChunkExecutor(emb)
    ex.reset(10.0)
    assert ex.should_request(10.0)
    ex.scheduler.mark_requested(10.0)
    assert not ex.should_request(10.02)  # a request is outstanding
    # The policy answers with a chunk computed from an observation taken before the reset ...
    assert offer(ex, stamp=9.95, now=10.04) == "before_reset"
    # ... which is no answer: the next tick asks again instead of waiting request_timeout (1 s).
    assert ex.should_request(10.06)
    assert offer(ex, stamp=10.05, now=10.1) is None
    assert not ex.should_request(10.12)


def test_reset_reseeds_the_step_limit_from_the_new_measured_state() -> None:
    emb = load_embodiment("ur5e")
    ex = ChunkExecutor(emb)
    home = np.zeros(emb.num_dims)
    ex.set_measured(home)
    assert offer(ex, stamp=0.0, now=0.0, value=0.0) is None
    ex.tick(0.02)
    ex.reset(1.0)
    ex.set_measured(None)  # the node forgets joint states stamped before the reset
    assert ex.tick_hold(1.0).commands is None  # no reference: nothing is sent
    moved = home.copy()
    moved[0] = 0.5
    ex.set_measured(moved)
    assert offer(ex, stamp=1.0, now=1.0, value=0.5) is None
    res = ex.tick(1.02)
    assert res.commands is not None and abs(ex.last_values[0] - 0.5) < 1e-9  # no jump from the old command
