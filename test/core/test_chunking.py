"""Tests for pi0_ros.chunking: alignment, latency compensation, switching, no-stall requests."""

from __future__ import annotations

import heapq
import math
import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pi0_ros.chunking import Chunk, ChunkScheduler, Rejection, TickReason

DT = 0.02  # s, 50 Hz
H = 50


def ramp(stamp: float, seq: int = 0, offset: float = 0.0, dt: float = DT, h: int = H) -> Chunk:
    """actions[i] = (offset + i, -(offset + i)): the value says which action it is."""
    v = offset + np.arange(h, dtype=np.float64)
    return Chunk(stamp=stamp, dt=dt, actions=np.stack([v, -v], axis=1), seq=seq)


def test_ramp_ticks_on_grid_give_action_k() -> None:
    s = ChunkScheduler(execute_steps=25)
    stamp = 100.0
    assert s.offer(ramp(stamp), now=stamp) is None
    for k in range(25):
        tick = s.action_at(stamp + k * DT)
        assert tick.reason == TickReason.OK and tick.index == k
        assert tick.action is not None and tick.action.tolist() == [k, -k]
        assert tick.t_action == pytest.approx(stamp + k * DT)
    tick = s.action_at(stamp + 25 * DT)
    assert tick.action is None and tick.reason == "exhausted"
    assert s.counters.actions_executed == 25 and s.counters.no_action["exhausted"] == 1


def test_whole_chunk_then_exhausted_past_the_end() -> None:
    s = ChunkScheduler(execute_steps=None)
    s.offer(ramp(0.0), now=0.0)
    got = [s.action_at(k * DT) for k in range(H + 3)]
    assert [t.index for t in got[:H]] == list(range(H))
    assert all(t.action is None and t.reason == TickReason.EXHAUSTED for t in got[H:])


@settings(max_examples=100, deadline=None)
@given(jitter=st.lists(st.floats(-0.45, 0.45), min_size=25, max_size=25))
def test_tick_jitter_below_half_dt_neither_skips_nor_repeats(jitter: list[float]) -> None:
    s = ChunkScheduler(execute_steps=25)
    s.offer(ramp(5.0), now=5.0)
    idx = [s.action_at(5.0 + (k + j) * DT).index for k, j in enumerate(jitter)]
    assert idx == list(range(25))


def test_rows_are_read_only_views_of_a_private_copy() -> None:
    src = np.zeros((H, 3))
    c = Chunk(stamp=0.0, dt=DT, actions=src, seq=0)
    src[:] = 7.0  # the caller reuses its buffer: the chunk must not change
    s = ChunkScheduler(execute_steps=25)
    s.offer(c, now=0.0)
    tick = s.action_at(0.0)
    assert tick.action is not None and tick.action.tolist() == [0.0, 0.0, 0.0]
    assert np.shares_memory(tick.action, c.actions)  # a view, not a per-tick copy
    with pytest.raises(ValueError):
        tick.action[0] = 1.0


@pytest.mark.parametrize("latency_ms", [5, 20, 30, 50, 70, 100, 330, 900])
def test_late_chunk_starts_at_ceil_latency_and_never_replays(latency_ms: int) -> None:
    dt_ms = 20
    stamp = 10.0
    s = ChunkScheduler(execute_steps=25)
    assert s.offer(ramp(stamp), now=stamp + latency_ms / 1000) is None
    k0 = -(-latency_ms // dt_ms)  # ceil(L/dt), exactly, in integers
    ticks = [s.action_at(stamp + k * DT) for k in range(k0, k0 + 30)]
    sent = [t for t in ticks if t.action is not None]
    end = min(k0 + 25, H)  # execute_steps from the start index, capped by the chunk's end
    assert sent[0].index == k0
    assert [t.index for t in sent] == list(range(k0, end))
    assert all(t.reason == TickReason.EXHAUSTED for t in ticks[end - k0 :])
    # Never an action whose time is more than tol in the past.
    for k, t in zip(range(k0, end), sent):
        assert t.t_action >= stamp + k * DT - DT / 2


def test_off_grid_ticks_plain_rounding_vs_phase_lock() -> None:
    plain = ChunkScheduler(execute_steps=25, lock_window=0.5)  # pure time rounding
    plain.offer(ramp(0.0), now=0.071)
    assert plain.action_at(0.071).index == 4  # 3.55 slots: nearest future-or-now action
    assert plain.action_at(0.089).index == 4  # 4.45 slots: still nearest to 4 (a repeat)
    assert plain.action_at(0.091).index == 5
    locked = ChunkScheduler(execute_steps=25)
    locked.offer(ramp(0.0), now=0.071)
    assert locked.action_at(0.071).index == 4
    assert locked.action_at(0.089).index == 5  # the next action, 0.55 slots ahead: no repeat


def test_timer_phase_at_half_slot_with_jitter_neither_skips_nor_repeats() -> None:
    # The control timer ticks half a slot off the chunk's grid, +-0.1 slot of jitter.
    jitter = [0.1, -0.1] * 12
    locked = ChunkScheduler(execute_steps=25)
    locked.offer(ramp(0.0), now=0.0)
    idx = [locked.action_at((k + 0.5 + j) * DT).index for k, j in enumerate(jitter)]
    assert np.diff(idx).tolist() == [1] * 23
    # Plain rounding turns the same jitter into repeat/skip pairs.
    plain = ChunkScheduler(execute_steps=25, lock_window=0.5)
    plain.offer(ramp(0.0), now=0.0)
    idx = [plain.action_at((k + 0.5 + j) * DT).index for k, j in enumerate(jitter)]
    assert 0 in np.diff(idx).tolist() and 2 in np.diff(idx).tolist()


@settings(max_examples=200, deadline=None)
@given(
    phase=st.floats(0.0, 1.0),
    gaps=st.lists(st.floats(0.4, 3.0), min_size=1, max_size=40),
    lock=st.sampled_from([0.5, 0.75, 1.0]),
)
def test_any_tick_pattern_stays_within_the_lock_window(
    phase: float, gaps: list[float], lock: float
) -> None:
    s = ChunkScheduler(execute_steps=None, lock_window=lock)
    s.offer(ramp(0.0, h=200), now=0.0)
    t = phase * DT
    prev = -1
    for g in [0.0, *gaps]:
        t += g * DT
        tick = s.action_at(t)
        assert tick.action is not None
        x = t / DT
        # Never a slot or more in the past (no replay), never a slot or more early.
        assert abs(tick.index - x) < max(lock, 0.5) + 1e-9
        assert tick.index >= prev  # never backwards
        prev = tick.index


def test_fast_timer_repeats_never_skips_or_jumps() -> None:
    s = ChunkScheduler(execute_steps=None)
    s.offer(ramp(0.0), now=0.0)
    ticks = [s.action_at(k * DT / 2) for k in range(60)]  # a 100 Hz timer on a 50 Hz chunk
    assert all(t.reason == TickReason.OK for t in ticks)
    idx = [t.index for t in ticks]
    assert set(np.diff(idx).tolist()) == {0, 1}
    assert all(abs(i - k / 2) <= 1.0 + 1e-9 for k, i in enumerate(idx))  # within one slot


@pytest.mark.parametrize(("period", "repeats", "skips"), [(1.05, False, True), (0.95, True, False)])
def test_clock_drift_realigns(period: float, repeats: bool, skips: bool) -> None:
    s = ChunkScheduler(execute_steps=None)
    s.offer(ramp(0.0), now=0.0)
    idx = [s.action_at(k * period * DT).index for k in range(45)]
    d = np.diff(idx).tolist()
    assert set(d) <= {0, 1, 2}
    assert (0 in d) == repeats and (2 in d) == skips
    assert all(abs(i - k * period) < 1.0 for k, i in enumerate(idx))


def test_switches_to_newer_chunk_at_its_time_aligned_index() -> None:
    s = ChunkScheduler(execute_steps=25)
    s.offer(ramp(0.0, seq=0), now=0.0)
    assert [s.action_at(k * DT).index for k in range(8)] == list(range(8))
    # Chunk B was inferred from an observation at 0.10 s and arrives at 0.15 s.
    assert s.offer(ramp(0.10, seq=1, offset=100.0), now=0.15) is None
    assert s.pending is not None
    tick = s.action_at(8 * DT)  # 0.16 s: B's index for 0.16 is 3
    assert tick.seq == 1 and tick.index == 3 and tick.action is not None
    assert tick.action[0] == 103.0
    assert s.counters.switched == 2 and s.pending is None
    # execute_steps is counted from B's start index 3: indices 3..27.
    idx = [s.action_at(k * DT).index for k in range(9, 40)]
    assert idx[: 27 - 3] == list(range(4, 28))
    assert all(i == -1 for i in idx[24:])


def test_future_chunk_does_not_preempt_until_due() -> None:
    s = ChunkScheduler(execute_steps=None)
    assert s.action_at(0.0).reason == TickReason.NO_CHUNK
    s.offer(ramp(0.10, seq=0), now=0.0)  # stamped in the future (clock skew)
    assert s.action_at(0.0).reason == TickReason.NOT_DUE
    assert s.action_at(0.10).index == 0
    s.offer(ramp(0.30, seq=1, offset=100.0), now=0.12)
    assert s.action_at(0.12).seq == 0  # the future chunk waits
    tick = s.action_at(0.30)
    assert tick.seq == 1 and tick.index == 0


def test_one_far_future_chunk_never_wedges_the_scheduler() -> None:
    """Defect: a chunk stamped now + 3600 s was accepted as "next"; every later chunk was then
    rejected as older and the robot held for as long as anyone watched."""
    s = ChunkScheduler(execute_steps=25)
    assert s.offer(ramp(0.0, seq=0), now=0.0) is None
    assert s.offer(ramp(3600.0, seq=1, offset=500.0), now=0.1) == Rejection.FUTURE_STAMP
    assert s.counters.rejected["future_stamp"] == 1
    # Valid chunks keep flowing and execute.
    for k in range(1, 20):
        t = 0.5 * k
        assert s.offer(ramp(t - 0.05, seq=1 + k, offset=float(k)), now=t) is None
        tick = s.action_at(t)
        assert tick.reason == TickReason.OK and tick.seq == 1 + k


def test_future_tolerance_is_a_parameter() -> None:
    s = ChunkScheduler(execute_steps=25, max_future=0.05)
    assert s.offer(ramp(1.06), now=1.0) == Rejection.FUTURE_STAMP
    assert s.offer(ramp(1.04), now=1.0) is None
    with pytest.raises(ValueError):
        ChunkScheduler(execute_steps=25, max_future=math.inf)


@pytest.mark.parametrize(
    ("stamp", "seq", "expected"),
    [
        (1.0, 5, Rejection.DUPLICATE),
        (0.9, 9, Rejection.OLDER),  # older observation, whatever its seq
        (1.0, 4, Rejection.OLDER),
        (1.0, 6, None),  # same observation, later inference: newer
        (1.1, 0, None),  # policy node restarted: seq starts again, stamp decides
    ],
)
def test_offer_ordering(stamp: float, seq: int, expected: Rejection | None) -> None:
    s = ChunkScheduler(execute_steps=25)
    assert s.offer(ramp(1.0, seq=5), now=1.0) is None
    assert s.offer(ramp(stamp, seq=seq), now=1.1) == expected
    if expected is not None:
        assert s.counters.rejected[expected.value] == 1


def test_offer_rejects_malformed_and_expired() -> None:
    s = ChunkScheduler(execute_steps=25, action_dim=2)
    assert s.offer(ramp(0.0), now=H * DT) == Rejection.EXPIRED  # every action is past
    assert s.offer(Chunk(0.0, DT, np.zeros(H), 1), now=0.0) == Rejection.BAD_SHAPE
    assert s.offer(Chunk(0.0, DT, np.zeros((0, 2)), 1), now=0.0) == Rejection.BAD_SHAPE
    assert s.offer(Chunk(0.0, DT, np.zeros((H, 3)), 1), now=0.0) == Rejection.BAD_SHAPE
    assert s.offer(Chunk(0.0, 0.0, np.zeros((H, 2)), 1), now=0.0) == Rejection.BAD_TIMING
    assert s.offer(Chunk(math.nan, DT, np.zeros((H, 2)), 1), now=0.0) == Rejection.BAD_TIMING
    c = s.counters
    assert c.received == 6 and c.accepted == 0
    assert c.rejected == {
        "duplicate": 0, "older": 0, "expired": 1, "bad_shape": 3, "bad_timing": 2, "future_stamp": 0,
    }
    assert s.action_at(0.0).reason == TickReason.NO_CHUNK


def test_action_dim_is_fixed_by_first_chunk() -> None:
    s = ChunkScheduler(execute_steps=25)
    assert s.offer(ramp(0.0), now=0.0) is None
    assert s.offer(Chunk(0.1, DT, np.zeros((H, 5)), 1), now=0.1) == Rejection.BAD_SHAPE


def test_pending_superseded_before_it_started() -> None:
    s = ChunkScheduler(execute_steps=25)
    s.offer(ramp(0.0, seq=0), now=0.0)
    s.action_at(0.0)
    s.offer(ramp(0.10, seq=1), now=0.10)
    s.offer(ramp(0.12, seq=2, offset=100.0), now=0.12)  # before the next tick
    tick = s.action_at(0.12)
    assert tick.seq == 2 and tick.index == 0
    assert s.counters.superseded == 1 and s.counters.switched == 2


def test_clock_jump_back_never_replays_and_reset_recovers() -> None:
    s = ChunkScheduler(execute_steps=25)
    s.offer(ramp(0.0), now=0.0)
    assert s.action_at(0.2).index == 10
    assert s.action_at(0.1).reason == TickReason.CLOCK_JUMP
    s.reset()
    assert s.action_at(0.1).reason == TickReason.NO_CHUNK
    assert s.offer(ramp(0.0), now=0.0) is None  # ordering memory is gone too


def test_should_request_logic() -> None:
    s = ChunkScheduler(execute_steps=25, initial_latency=0.1)
    assert s.should_request(0.0)  # nothing to execute
    s.mark_requested(0.0)
    assert not s.should_request(0.5)  # request outstanding
    assert s.should_request(1.0)  # ... but it timed out (request_timeout 1 s): retry
    s.offer(ramp(1.0), now=1.0)
    assert not s.should_request(1.0)  # a chunk is pending
    s.action_at(1.0)
    # Executable until the last action (index 24) stops covering: 1.0 + 24.5 dt = 1.49 s.
    assert s.remaining_time(1.0) == pytest.approx(0.49)
    # latency 0.1 + margin 2 dt = 0.14: request once remaining <= 0.14, i.e. from 1.35 s.
    assert not s.should_request(1.34)
    assert s.should_request(1.36)
    assert not s.should_request(1.2, expected_latency=0.2)
    assert s.should_request(1.2, expected_latency=0.3)


def test_latency_ema() -> None:
    s = ChunkScheduler(execute_steps=25, initial_latency=0.1, latency_alpha=0.5)
    assert s.latency_estimate == 0.1
    s.observe_latency(0.2)
    assert s.latency_estimate == pytest.approx(0.2)
    s.observe_latency(0.4)
    assert s.latency_estimate == pytest.approx(0.3)
    s.observe_latency(math.nan)
    s.observe_latency(-1.0)
    assert s.latency_estimate == pytest.approx(0.3)


def simulate(
    execute_steps: int,
    latency: float,
    *,
    jitter: float = 0.0,
    seconds: float = 10.0,
    request_policy: str = "should_request",
    seed: int = 0,
) -> tuple[list[int | None], ChunkScheduler]:
    """Executor loop at 50 Hz with a policy that answers each request after ~latency.

    The policy stamps its chunk with the newest observation (taken 5 ms before the request)
    and the executor measures latency as arrival - stamp. Returns, per tick, the index sent
    (None for no action).
    """
    rng = random.Random(seed)
    s = ChunkScheduler(execute_steps=execute_steps, initial_latency=latency)
    in_flight: list[tuple[float, int, Chunk]] = []  # (arrival, seq, chunk)
    seq = 0
    sent: list[int | None] = []
    for k in range(int(round(seconds / DT))):
        now = k * DT
        while in_flight and in_flight[0][0] <= now:
            arrival, _, chunk = heapq.heappop(in_flight)
            s.observe_latency(arrival - chunk.stamp)
            s.offer(chunk, now=arrival)
        tick = s.action_at(now)
        if tick.action is not None:
            # Latency compensation: the action sent is the one meant for now.
            assert abs(tick.t_action - now) <= DT / 2 + 1e-9
        sent.append(tick.index if tick.action is not None else None)
        if request_policy == "should_request":
            want = s.should_request(now)
        else:  # naive: ask only when nothing is left
            want = tick.action is None and s.pending is None and not in_flight
        if want:
            s.mark_requested(now)
            t_obs = now - 0.005
            arrival = now + latency + rng.uniform(0.0, jitter)
            heapq.heappush(in_flight, (arrival, seq, ramp(t_obs, seq=seq)))
            seq += 1
    return sent, s


@pytest.mark.parametrize(
    ("execute_steps", "latency"),
    [(25, 0.03), (25, 0.086), (25, 0.2), (25, 0.4), (16, 0.25), (5, 0.06)],
)
def test_no_stall_when_latency_below_execute_window(execute_steps: int, latency: float) -> None:
    assert latency < execute_steps * DT
    sent, s = simulate(execute_steps, latency, jitter=0.01)
    first = next(i for i, v in enumerate(sent) if v is not None)
    assert first * DT <= latency + 0.005 + DT  # the first chunk is used as soon as it lands
    gaps = [i for i, v in enumerate(sent[first:]) if v is None]
    assert gaps == []
    assert s.counters.switched > 10
    assert s.counters.no_action["exhausted"] == 0


def test_gaps_reported_when_latency_exceeds_execute_window() -> None:
    execute_steps, latency = 5, 0.25  # 0.1 s of actions per chunk, 0.25 s to get the next
    sent, s = simulate(execute_steps, latency)
    first = next(i for i, v in enumerate(sent) if v is not None)
    gaps = sum(v is None for v in sent[first:])
    assert gaps > 0
    assert s.counters.no_action["exhausted"] == gaps
    # Roughly (latency - execute window) / latency of the time is a gap.
    assert 0.4 < gaps / len(sent[first:]) < 0.75


def test_naive_request_on_exhaustion_stalls() -> None:
    # The same fast policy, asked only when the chunk has run out, leaves gaps: the early
    # request in should_request is what removes them.
    sent, _ = simulate(25, 0.086, request_policy="naive")
    first = next(i for i, v in enumerate(sent) if v is not None)
    assert sum(v is None for v in sent[first:]) > 0


def test_indices_never_go_backwards_within_a_chunk_in_simulation() -> None:
    sent, _ = simulate(25, 0.12, jitter=0.01, seconds=4.0, seed=3)
    # Within the loop each tick maps to the action for now; consecutive ticks on the same
    # chunk step by exactly one index (no replays, no skips).
    prev = None
    for v in sent:
        if v is not None and prev is not None and v > prev:
            assert v == prev + 1
        prev = v
