"""Choosing a ROS domain nobody else is using on this machine.

Two ROS sessions on one domain see each other's topics: a test's simulated UR5e publishing
/joint_states into a data collector's graph corrupts the collector's episodes, and on a lab PC
it would reach a real robot's executor. A random domain id is not enough: with the tools'
collectors on fixed domains (tools/proof_data.sh: 60+, 80+; make_transfer_experiment.sh: 90+)
a random pick in 1..100 collides every few runs. So the choice skips the domains the tools use
and, when rclpy is importable, probes each candidate for participants that are already there.
"""
from __future__ import annotations

import random
import time
from typing import Callable, Optional, Sequence

# Domains tools/ scripts use by default (collectors count up from their base); ROS 2 keeps ids
# 0-101 safe on Linux, so test sessions draw from 1-59 (minus 35, the evaluations' usual domain).
TOOL_DOMAINS = frozenset({0, 35, *range(60, 102)})
TEST_DOMAINS: tuple[int, ...] = tuple(d for d in range(1, 60) if d not in TOOL_DOMAINS)

_PROBE_NODE = "_pi0_ros_domain_probe"


def domain_in_use(domain_id: int, wait_s: float = 1.0) -> bool:
    """True when another ROS node is discovered on `domain_id` within `wait_s` seconds.

    Discovery follows ROS_AUTOMATIC_DISCOVERY_RANGE as set by the caller (LOCALHOST in tests)."""
    import rclpy
    from rclpy.context import Context

    ctx = Context()
    rclpy.init(context=ctx, domain_id=domain_id)
    node = None
    try:
        node = rclpy.create_node(_PROBE_NODE, context=ctx)
        deadline = time.monotonic() + wait_s
        while True:
            if any(name != _PROBE_NODE for name, _ in node.get_node_names_and_namespaces()):
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.shutdown(context=ctx)


def free_domain_id(
    candidates: Sequence[int] = TEST_DOMAINS,
    seed: Optional[int] = None,
    in_use: Optional[Callable[[int], bool]] = None,
    max_probes: int = 8,
) -> int:
    """A domain id from `candidates` (shuffled by `seed`) that `in_use` reports free.

    `in_use` defaults to `domain_in_use` when rclpy imports, else to "nothing is in use". After
    `max_probes` busy candidates the next one is returned unprobed: a crowded machine slows the
    choice down by at most `max_probes` probe waits, it never blocks it."""
    order = list(candidates)
    if not order:
        raise ValueError("free_domain_id: no candidate domains")
    random.Random(seed).shuffle(order)
    if in_use is None:
        try:
            import rclpy  # noqa: F401
        except ImportError:
            return order[0]
        in_use = domain_in_use
    for i, domain in enumerate(order):
        if i >= max_probes or not in_use(domain):
            return domain
    return order[-1]

