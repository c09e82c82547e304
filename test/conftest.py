"""Session-wide test setup: isolate DDS traffic so parallel runs never see each other."""
import os

# Keep DDS discovery on loopback and give every pytest session its own domain.
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
if "ROS_DOMAIN_ID" not in os.environ:
    # Not a domain the tools' collectors and evaluations use, and none where nodes already run:
    # a test's simulated robot must never publish into a live graph (pi0_ros/ros/domain.py).
    from pi0_ros.ros.domain import free_domain_id

    os.environ["ROS_DOMAIN_ID"] = str(free_domain_id(seed=os.getpid()))
os.environ.setdefault("MUJOCO_GL", "egl")


import pytest  # noqa: E402

UR5E_CROP = [0.2, 0.25, 0.5, 0.5]


@pytest.fixture(scope="session")
def cropped_ur5e(tmp_path_factory) -> str:
    """Path of config/embodiments/ur5e.yaml with a region of interest on its top camera
    (cameras.base_0_rgb.crop = UR5E_CROP; the shipped YAMLs crop nothing)."""
    import yaml

    from pi0_ros.robots.embodiment import embodiments_dir

    spec = yaml.safe_load((embodiments_dir() / "ur5e.yaml").read_text())
    spec["cameras"]["base_0_rgb"]["crop"] = UR5E_CROP
    p = tmp_path_factory.mktemp("embodiments") / "ur5e.yaml"
    p.write_text(yaml.safe_dump(spec, sort_keys=False))
    return str(p)


@pytest.fixture(autouse=True)
def _normal_scheduling(request):
    """Every test starts and ends at normal scheduling. One CI run hung with the pytest process at
    SCHED_FIFO 99, where OpenMP's spin-waiting threads starve the thread they wait for on 2 cores.
    This guard found the cause: SVT-AV1 (bag2dataset --video) makes its caller real-time when run
    as root; the converter now undoes that (pi0_ros/data/no_realtime.py). A change is reported
    with the test it happened in, and normal scheduling is restored for the tests after it."""
    import warnings

    def normal() -> bool:
        return not hasattr(os, "sched_getscheduler") or os.sched_getscheduler(0) == os.SCHED_OTHER

    def restore(when: str) -> None:
        policy = os.sched_getscheduler(0)
        try:
            os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
        except OSError as e:  # pragma: no cover - reported, the test still runs
            warnings.warn(f"{request.node.nodeid}: scheduling policy {policy} {when}, could not restore: {e}")
            return
        warnings.warn(f"{request.node.nodeid}: the main thread's scheduling policy was {policy} {when}; "
                      "restored SCHED_OTHER")

    if not normal():
        restore("before the test")
    yield
    if not normal():
        restore("after the test")
