"""Tests for pi0_ros.safety: hold, limits, step limit, e-stop, chunk validation, fuzzing."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from pi0_ros.safety import (
    INTERVENTIONS,
    ChunkProblem,
    SafeCommand,
    SafetyFilter,
    SafetyLimits,
    validate_chunk,
)

RATE = 50.0  # Hz
# A small mobile robot: 2 arm joints, a gripper, base v_x and w_z.
LIMITS = SafetyLimits(
    lower=[-1.0, -2.0, 0.0, -1.0, -2.0],
    upper=[1.0, 2.0, 1.0, 1.0, 2.0],
    max_velocity=[1.0, 0.5, 2.0, 0.5, 1.0],  # rad/s, rad/s, 1/s, v_x m/s^2, w_z rad/s^2
    kinds=("joint", "joint", "gripper", "velocity", "velocity"),
)
STEP = np.array([1.0, 0.5, 2.0]) / RATE  # per-tick step of the position dims
VSTEP = np.array([0.5, 1.0]) / RATE  # per-tick step (acceleration limit) of v_x, w_z
HOME = np.array([0.0, 0.0, 0.5, 0.0, 0.0])


def make(**kw: object) -> SafetyFilter:
    return SafetyFilter(LIMITS, control_rate_hz=RATE, stale_after=0.5, **kw)  # type: ignore[arg-type]


def cmd(f: SafetyFilter, action: object, now: float, measured: object = None) -> SafeCommand:
    out = f.filter(action, now, measured)  # type: ignore[arg-type]
    assert out is not None
    return out


def test_valid_small_action_passes_unchanged() -> None:
    f = make()
    a = np.array([0.01, -0.005, 0.52, 0.008, -0.02])
    out = cmd(f, a, 0.0, HOME)
    assert not out.held and out.interventions == []
    np.testing.assert_array_equal(out.values, a)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_action_is_rejected_whole_and_holds(bad: float) -> None:
    f = make()
    first = cmd(f, np.array([0.01, 0.0, 0.5, 0.3, 0.2]), 0.0, HOME).values.copy()
    a = np.array([0.02, 0.0, 0.5, 0.3, 0.2])
    a[1] = bad
    out = cmd(f, a, 0.02, HOME)
    assert out.held and out.interventions == ["non_finite"]
    np.testing.assert_array_equal(out.values[:3], first[:3])  # arms: last command
    np.testing.assert_array_equal(out.values[3:], [0.0, 0.0])  # base: stop now
    assert f.counters["non_finite"] == 1 and f.counters["hold"] == 1


def test_huge_finite_values_are_not_mistaken_for_non_finite() -> None:
    f = make()
    out = cmd(f, np.full(5, 1e308), 0.0, HOME)  # the sum overflows, the values do not
    assert not out.held and "non_finite" not in out.interventions
    assert "clamp" in out.interventions


def test_clamps_to_position_and_velocity_limits() -> None:
    # Start at the limits' corner so the step limit does not hide the clamp.
    f = make()
    start = np.array([1.0, -2.0, 1.0, 0.0, 0.0])
    out = cmd(f, np.array([5.0, -5.0, 3.0, 2.0, -9.0]), 0.0, start)
    # The base starts from 0 and may only accelerate by one step toward the clamped target.
    assert out.interventions == ["clamp", "step_limit"]
    np.testing.assert_array_equal(out.values, [1.0, -2.0, 1.0, VSTEP[0], -VSTEP[1]])
    for k in range(1, 200):
        out = cmd(f, np.array([5.0, -5.0, 3.0, 2.0, -9.0]), k / RATE, start)
    np.testing.assert_allclose(out.values, [1.0, -2.0, 1.0, 1.0, -2.0])  # v_x, w_z at their limits
    assert f.counters["clamp"] == 200


def test_step_limit_approaches_far_target_gradually() -> None:
    f = make()
    target = np.array([0.9, -1.0, 0.0, 0.4, 0.0])
    prev = HOME.copy()
    outs = []
    for k in range(60):
        out = cmd(f, target, k / RATE, HOME)
        step = np.abs(out.values[:3] - prev[:3])
        assert (step <= STEP + 1e-12).all()
        assert abs(out.values[3] - prev[3]) <= VSTEP[0] + 1e-12  # base acceleration limit
        prev = out.values.copy()
        outs.append(prev)
    # Joint 0 moves 1 rad/s: 0.9 rad takes 45 ticks; joint 1 at 0.5 rad/s needs 100 ticks.
    assert outs[43][0] == pytest.approx(0.88) and outs[44][0] == pytest.approx(0.9)
    assert outs[59][1] == pytest.approx(-0.6)
    assert outs[25][2] == pytest.approx(0.0)  # gripper 0.5 -> 0 at 2/s: 13 ticks
    assert outs[38][3] == pytest.approx(0.39) and outs[39][3] == pytest.approx(0.4)  # v_x at 0.5 m/s^2
    assert f.counters["step_limit"] >= 45


def test_hold_keeps_last_command_not_measured() -> None:
    f = make()
    cmd(f, np.array([0.01, 0.0, 0.5, 0.5, 1.0]), 0.0, HOME)
    sagged = np.array([-0.2, -0.1, 0.5, 0.0, 0.0])  # the arm sags while we hold
    for k in range(1, 5):
        out = cmd(f, None, k / RATE, sagged)
        assert out.held and out.interventions == ["no_action"]
        np.testing.assert_array_equal(out.values, [0.01, 0.0, 0.5, 0.0, 0.0])
    # Resuming after the hold is rate limited from the held position.
    out = cmd(f, np.array([0.5, 0.0, 0.5, 0.0, 0.0]), 0.1, sagged)
    assert out.values[0] == pytest.approx(0.01 + STEP[0])


def test_hold_uses_measured_when_nothing_commanded_and_none_without_either() -> None:
    f = make()
    assert f.filter(None, 0.0, None) is None
    assert f.counters["no_reference"] == 1
    measured = np.array([0.3, 5.0, 0.5, 0.7, 0.1])  # joint 1 beyond its limit, base moving
    out = cmd(f, None, 0.02, measured)
    assert out.held
    np.testing.assert_array_equal(out.values, [0.3, 2.0, 0.5, 0.0, 0.0])


def test_velocity_only_robot_holds_zero_without_measurement() -> None:
    lim = SafetyLimits(lower=[-1, -1], upper=[1, 1], max_velocity=[0.5, 1.0],
                       kinds=("velocity", "velocity"))
    f = SafetyFilter(lim, RATE, stale_after=0.5)
    out = f.filter(None, 0.0, None)
    assert out is not None and out.held and out.values.tolist() == [0.0, 0.0]
    for k in range(1, 200):
        out = f.filter(np.array([0.3, -2.0]), k / RATE, None)
    assert out is not None and out.values.tolist() == pytest.approx([0.3, -1.0])
    # A hold decelerates at the acceleration limit (0.5 and 1.0 per s^2) ...
    out = f.filter(None, 4.0, None)
    assert out is not None and out.values.tolist() == pytest.approx([0.3 - 0.01, -1.0 + 0.02])
    for k in range(1, 60):
        out = f.filter(None, 4.0 + k / RATE, None)
    assert out is not None and out.values.tolist() == [0.0, 0.0]
    # ... and an e-stop stops at once.
    for k in range(1, 200):
        out = f.filter(np.array([0.3, -2.0]), 6.0 + k / RATE, None)
    f.estop(True)
    out = f.filter(np.array([0.3, -2.0]), 10.0, None)
    assert out is not None and out.values.tolist() == [0.0, 0.0]


def test_base_velocity_is_rate_limited_both_ways() -> None:
    """Defect: v_x went +0.5 -> -0.5 m/s in one 20 ms tick (max_velocity is an acceleration limit)."""
    f = make()
    for k in range(100):
        out = cmd(f, np.array([0.0, 0.0, 0.5, 0.5, 0.0]), k / RATE, HOME)
    assert out.values[3] == pytest.approx(0.5)
    prev = out.values[3]
    for k in range(100, 120):
        out = cmd(f, np.array([0.0, 0.0, 0.5, -0.5, 0.0]), k / RATE, HOME)
        assert abs(out.values[3] - prev) <= VSTEP[0] + 1e-12
        prev = out.values[3]
    assert prev == pytest.approx(0.5 - 20 * VSTEP[0])


def test_first_action_needs_a_reference() -> None:
    f = make()
    assert f.filter(np.zeros(5), 0.0, None) is None
    assert f.counters["no_reference"] == 1
    bad_measured = np.array([0.0, math.nan, 0.0, 0.0, 0.0])
    assert f.filter(np.zeros(5), 0.02, bad_measured) is None
    assert f.counters["invalid_measured"] == 1
    # NaN in a velocity dim of the measurement does not matter: it is never used.
    ok = cmd(f, np.full(5, 0.1), 0.04, np.array([0.0, 0.0, 0.0, math.nan, math.nan]))
    np.testing.assert_allclose(ok.values, [0.02, 0.01, 0.04, 0.01, 0.02])
    # Robots without position feedback can opt out; the first command is then only clamped.
    g = make(require_reference=False)
    np.testing.assert_array_equal(cmd(g, np.full(5, 3.0), 0.0).values, [1, 2, 1, 0.01, 0.02])


def test_bad_shape_holds() -> None:
    f = make()
    cmd(f, HOME, 0.0, HOME)
    for k, bad in enumerate([np.zeros(4), np.zeros((5, 1)), "abc", [1, 2], np.zeros(5) + 1j]):
        out = cmd(f, bad, (k + 1) / RATE, HOME)
        assert out.held and out.interventions == ["bad_shape"]
    assert f.counters["bad_shape"] == 5
    out = cmd(f, [0.0, 0.0, 0.5, 0.1, 0.1], 1.0, HOME)  # a list of the right length is fine
    assert not out.held


def test_estop_latches_and_needs_enable() -> None:
    f = make()
    go = np.array([0.5, 0.0, 0.5, 0.4, 0.0])
    cmd(f, go, 0.0, HOME)
    f.estop(True)
    out = cmd(f, go, 0.02, HOME)
    assert out.held and out.interventions == ["estop"] and out.values[3] == 0.0
    assert not f.enable()  # refused while e-stopped
    f.estop(False)
    out = cmd(f, go, 0.04, HOME)
    assert out.held and out.interventions == ["disabled"]  # release alone does not move
    assert f.enable()
    out = cmd(f, go, 0.06, HOME)
    assert not out.held and out.values[3] == pytest.approx(VSTEP[0])  # accelerates again from 0
    assert f.counters["estop"] == 1 and f.counters["disabled"] == 1


def test_disable_enable() -> None:
    f = make(enabled=False)
    out = cmd(f, HOME, 0.0, HOME)
    assert out.held and out.interventions == ["disabled"]
    f.enable()
    assert not cmd(f, HOME, 0.02, HOME).held
    f.disable()
    assert cmd(f, HOME, 0.04, HOME).held


def test_a_stall_never_breaks_the_step_limit() -> None:
    """Defect: after a stall the last command was re-seeded from the (lagging) measured
    position, so the next command jumped up to 3.5x the step limit."""
    f = make()
    target = np.array([0.8, 0.0, 0.5, 0.0, 0.0])
    prev = cmd(f, HOME, 0.0, HOME).values.copy()
    t = 0.0
    for k in range(40):
        t += 1 / RATE
        if k % 8 == 7:
            t += 0.8  # a stall longer than stale_after (0.5 s)
        lagging = prev - np.array([0.3, 0.0, 0.0, 0.0, 0.0])  # the arm lags 0.3 rad behind
        out = cmd(f, target, t, lagging)
        assert (np.abs(out.values[:3] - prev[:3]) <= STEP + 1e-12).all(), (k, out.values, prev)
        prev = out.values.copy()
    assert f.counters["stale"] == 5


def test_hold_does_not_creep_with_a_sagging_arm_across_stalls() -> None:
    """Defect: a joint sagging 0.05 rad per stall walked the hold target 0.5 rad down over 10 stalls."""
    f = make()
    held = cmd(f, np.array([0.3, 0.0, 0.5, 0.0, 0.0]), 0.0, np.array([0.3, 0.0, 0.5, 0.0, 0.0])).values.copy()
    measured = held.copy()
    t = 0.0
    for _ in range(10):
        t += 1.0  # stall
        measured[0] -= 0.05  # gravity wins a little during every stall
        out = cmd(f, None, t, measured)
        assert out.held and "stale" in out.interventions
        np.testing.assert_array_equal(out.values, held)


def test_watchdog_hold_from_a_separate_timer() -> None:
    f = make()
    cmd(f, np.array([0.02, 0.0, 0.5, 0.3, 0.0]), 0.0, HOME)
    assert f.is_stale(1.0)
    out = f.hold(reason="stale")
    assert out is not None and out.held and out.values[3] == 0.0 and out.values[0] == 0.02
    assert f.counters["stale"] == 1


def test_returned_values_are_read_only() -> None:
    f = make()
    out = cmd(f, HOME, 0.0, HOME)
    with pytest.raises(ValueError):
        out.values[0] = 1.0
    assert f.last_command is not None and f.last_command.tolist() == HOME.tolist()


@pytest.mark.parametrize(
    ("actions", "dim", "emb", "expected"),
    [
        (np.zeros((50, 14)), 14, "aloha", None),
        (np.zeros((50, 14)), 14, "ur5e", ChunkProblem.WRONG_EMBODIMENT),
        (np.zeros((50, 7)), 14, "aloha", ChunkProblem.WRONG_DIM),
        (np.zeros(14), 14, "aloha", ChunkProblem.NOT_2D),
        (np.zeros((0, 14)), 14, "aloha", ChunkProblem.EMPTY),
        (np.zeros((50, 0)), 0, "aloha", ChunkProblem.EMPTY),
        (np.where(np.arange(700).reshape(50, 14) == 699, np.nan, 0.0), 14, "aloha",
         ChunkProblem.NON_FINITE),
        (np.full((50, 14), np.inf), 14, "aloha", ChunkProblem.NON_FINITE),
        (np.full((50, 14), "x"), 14, "aloha", ChunkProblem.NON_FINITE),
    ],
)
def test_validate_chunk_reasons(
    actions: np.ndarray, dim: int, emb: str, expected: ChunkProblem | None
) -> None:
    assert validate_chunk(actions, dim, emb, "aloha") == expected
    f = make()
    f.validate_chunk(actions, dim, emb, "aloha")
    if expected is not None:
        assert f.counters[f"chunk_{expected.value}"] == 1


def test_limits_validation() -> None:
    with pytest.raises(ValueError):
        SafetyLimits(lower=[0.0], upper=[-1.0], max_velocity=[1.0], kinds=("joint",))
    with pytest.raises(ValueError):
        SafetyLimits(lower=[0.0], upper=[1.0], max_velocity=[0.0], kinds=("joint",))
    with pytest.raises(ValueError):
        SafetyLimits(lower=[0.0], upper=[1.0], max_velocity=[1.0], kinds=("wheel",))  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        SafetyLimits(lower=[0.0, 0.0], upper=[1.0], max_velocity=[1.0], kinds=("joint",))
    with pytest.raises(ValueError):  # a base that cannot stop
        SafetyLimits(lower=[0.1], upper=[1.0], max_velocity=[1.0], kinds=("velocity",))
    with pytest.raises(ValueError):
        SafetyLimits(lower=[-np.inf], upper=[1.0], max_velocity=[1.0], kinds=("joint",))


def test_counters_cover_every_intervention() -> None:
    f = make()
    assert set(INTERVENTIONS) <= set(f.counters)
    assert all(v == 0 for v in f.counters.values())


# ---------------------------------------------------------------------- fuzzing
@st.composite
def limits_strategy(draw: st.DrawFn) -> SafetyLimits:
    d = draw(st.integers(1, 6))
    kinds = tuple(draw(st.lists(st.sampled_from(["joint", "gripper", "velocity"]),
                                min_size=d, max_size=d)))
    lower, upper = [], []
    for k in kinds:
        a = draw(st.floats(-10, 10))
        b = draw(st.floats(-10, 10))
        lo, hi = min(a, b), max(a, b)
        if k == "velocity":
            lo, hi = min(lo, 0.0), max(hi, 0.0)
        lower.append(lo)
        upper.append(hi)
    vmax = draw(st.lists(st.floats(1e-3, 10), min_size=d, max_size=d))
    return SafetyLimits(lower=lower, upper=upper, max_velocity=vmax, kinds=kinds)  # type: ignore[arg-type]


any_float = st.floats(allow_nan=True, allow_infinity=True, width=64)


def vector(d: int) -> st.SearchStrategy[object]:
    return st.one_of(
        st.none(),
        hnp.arrays(np.float64, d, elements=st.floats(-20, 20)),  # mostly sane
        hnp.arrays(np.float64, d, elements=any_float),  # NaN, inf, 1e308
        hnp.arrays(np.float64, d + 1, elements=st.floats(-1, 1)),  # wrong length
        st.lists(any_float, min_size=d, max_size=d),
    )


@st.composite
def scenario(draw: st.DrawFn) -> tuple[SafetyLimits, list[tuple[str, object, object]]]:
    lim = draw(limits_strategy())
    d = lim.dim
    op = st.one_of(
        st.tuples(st.just("tick"), vector(d), vector(d)),
        st.tuples(st.just("stall"), vector(d), vector(d)),
        st.tuples(st.just("estop"), st.booleans(), st.none()),
        st.tuples(st.just("enable"), st.none(), st.none()),
        st.tuples(st.just("disable"), st.none(), st.none()),
    )
    return lim, draw(st.lists(op, min_size=1, max_size=40))


@settings(max_examples=300, deadline=None)
@given(scenario())
def test_fuzz_never_nan_never_out_of_limits(
    case: tuple[SafetyLimits, list[tuple[str, object, object]]],
) -> None:
    lim, ops = case
    f = SafetyFilter(lim, RATE, stale_after=0.5)
    is_vel = np.array([k == "velocity" for k in lim.kinds])
    step = lim.max_velocity / RATE
    prev: np.ndarray | None = None
    t = 0.0
    for name, a, b in ops:
        stall = name == "stall"
        if name == "estop":
            f.estop(bool(a))
            continue
        if name == "enable":
            f.enable()
            continue
        if name == "disable":
            f.disable()
            continue
        t += 1.0 / RATE
        if stall:
            t += 1.0  # the loop stalled (> stale_after): the step limit must still hold
        with np.errstate(all="ignore"):
            out = f.filter(a, t, b)  # type: ignore[arg-type]
        if out is None:
            assert prev is None  # only possible before the first command
            continue
        v = out.values
        assert v.shape == (lim.dim,)
        assert np.isfinite(v).all()
        assert (v >= lim.low).all() and (v <= lim.high).all()
        if f.estopped:
            assert (v[is_vel] == 0.0).all()
        if (f.estopped or not f.enabled) and prev is not None:
            assert out.held
        if prev is not None:
            jump = np.abs(v - prev)
            # Every dim within one step of the previous command, across stalls too; only an
            # e-stop may drop the base velocity to 0 at once.
            ok = jump <= step * (1 + 1e-9) + 1e-12
            if f.estopped:
                ok |= is_vel & (v == 0.0)
            assert ok.all(), (jump, step)
        prev = v.copy()
