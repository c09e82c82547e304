"""The test session's ROS domain: never one the tools' collectors use, never one where nodes run.

Measured before the fix: the conftest drew 1..100 at random and picked domain 60 while
tools/proof_data.sh had a UR5e collector there; the test's simulated UR5e and the collector's
crossed topics, both sessions' episodes failed and the collector died ("simulator did not reset
in time")."""
from __future__ import annotations

import os

import pytest

from pi0_ros.ros.domain import TEST_DOMAINS, TOOL_DOMAINS, domain_in_use, free_domain_id


def test_default_candidates_avoid_the_tools_domains():
    assert TEST_DOMAINS and not set(TEST_DOMAINS) & TOOL_DOMAINS
    for d in (0, 35, 60, 61, 62, 80, 81, 82, 90, 91):  # evaluations, collectors, transfer collectors
        assert d in TOOL_DOMAINS
    picks = {free_domain_id(seed=s, in_use=lambda d: False) for s in range(300)}
    assert picks <= set(TEST_DOMAINS) and len(picks) > 10


def test_a_busy_domain_is_skipped():
    busy = {7, 8}
    for seed in range(50):
        assert free_domain_id([7, 8, 9], seed=seed, in_use=lambda d: d in busy) == 9


def test_probing_is_bounded_on_a_crowded_machine():
    probed: list[int] = []

    def everything_busy(d: int) -> bool:
        probed.append(d)
        return True

    d = free_domain_id(list(range(1, 40)), seed=0, in_use=everything_busy, max_probes=3)
    assert len(probed) == 3 and d not in probed


def test_no_candidates_is_an_error():
    with pytest.raises(ValueError):
        free_domain_id([])


@pytest.mark.ros
def test_the_probe_sees_a_node_on_a_domain_and_the_choice_avoids_it():
    import rclpy
    from rclpy.context import Context

    mine = int(os.environ["ROS_DOMAIN_ID"])  # this session's, chosen free by the conftest
    other = next(d for d in TEST_DOMAINS if d != mine)
    ctx = Context()
    rclpy.init(context=ctx, domain_id=mine)
    node = rclpy.create_node("collector_stand_in", context=ctx)
    try:
        assert domain_in_use(mine, wait_s=5.0)
        for seed in range(3):
            assert free_domain_id([mine, other], seed=seed, in_use=lambda d: domain_in_use(d, 2.0)) != mine
    finally:
        node.destroy_node()
        rclpy.shutdown(context=ctx)
