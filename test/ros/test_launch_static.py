"""`launch`/`launch_ros` are not on PyPI, so the launch files are checked statically: every
node executable is installed (CMake + console scripts), every argument is described, every
config file they reference exists for every embodiment, and the rviz config parses."""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import yaml

from pi0_ros.robots.embodiment import list_embodiments

ROOT = Path(__file__).resolve().parents[2]
LAUNCH_FILES = sorted((ROOT / "launch").glob("*.launch.py"))


def _calls(tree: ast.AST, name: str) -> list[ast.Call]:
    return [n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", getattr(n.func, "attr", "")) == name]


def _kw(call: ast.Call, key: str):
    for k in call.keywords:
        if k.arg == key:
            return k.value
    return None


def _const(node) -> str | None:
    return node.value if isinstance(node, ast.Constant) else None


def installed_executables() -> set[str]:
    cmake = (ROOT / "CMakeLists.txt").read_text()
    block = re.search(r"install\(PROGRAMS(.*?)DESTINATION lib/\$\{PROJECT_NAME\}", cmake, re.S).group(1)
    return {Path(p).name for p in block.split() if (ROOT / p).is_file()}


def test_there_are_launch_files():
    assert {p.name for p in LAUNCH_FILES} >= {"pi0.launch.py", "sim.launch.py"}


@pytest.mark.parametrize("path", LAUNCH_FILES, ids=lambda p: p.name)
def test_launch_file_is_consistent(path):
    tree = ast.parse(path.read_text())
    assert any(isinstance(n, ast.FunctionDef) and n.name == "generate_launch_description" for n in tree.body)
    declared = {}
    for call in _calls(tree, "DeclareLaunchArgument"):
        name = _const(call.args[0])
        desc = _const(_kw(call, "description"))
        assert name and desc and len(desc) > 10, f"{path.name}: argument {name} needs a description"
        declared[name] = _const(_kw(call, "default_value"))
    # Every LaunchConfiguration used is declared.
    for call in _calls(tree, "LaunchConfiguration"):
        assert _const(call.args[0]) in declared, f"{path.name}: undeclared {_const(call.args[0])}"
    exes = installed_executables()
    for call in _calls(tree, "Node"):
        if _const(_kw(call, "package")) != "pi0_ros":
            continue
        exe = _const(_kw(call, "executable"))
        assert exe in exes, f"{path.name}: executable {exe} not installed by CMakeLists.txt"
        script = (ROOT / "scripts" / exe).read_text()
        module = re.search(r"from (pi0_ros\.ros\.\w+) import main", script).group(1)
        assert (ROOT / (module.replace(".", "/") + ".py")).is_file()
    if path.name == "pi0.launch.py":
        assert set(declared) >= {"embodiment", "checkpoint", "prompt", "dry_run", "namespace"}
        assert declared["dry_run"] == "true"  # safe by default


def test_console_scripts_match_ros_executables():
    setup = (ROOT / "setup.py").read_text()
    for exe in installed_executables():
        module = re.search(r"from (pi0_ros\.ros\.\w+) import main", (ROOT / "scripts" / exe).read_text()).group(1)
        assert f"{module}:main" in setup


@pytest.mark.parametrize("name", list_embodiments())
def test_param_file_per_embodiment(name):
    p = ROOT / "config" / "params" / f"{name}.yaml"
    data = yaml.safe_load(p.read_text())
    for node in ("pi0_observation", "pi0_policy", "pi0_executor"):
        assert data[node]["ros__parameters"]["embodiment"] == name


def test_param_files_only_set_declared_parameters():
    """A typo in a YAML key would be silently ignored by ROS: check against the nodes' declarations."""
    src = {n: (ROOT / "pi0_ros" / "ros" / f"{f}.py").read_text() for n, f in
           [("pi0_observation", "observation_node"), ("pi0_policy", "policy_node"), ("pi0_executor", "executor_node"),
            ("pi0_viz", "viz_node")]}
    for p in (ROOT / "config" / "params").glob("*.yaml"):
        for node, body in yaml.safe_load(p.read_text()).items():
            for key in body["ros__parameters"]:
                assert f'"{key}"' in src[node], f"{p.name}: {node}.{key} is not a declared parameter"


def test_rviz_config_references_our_topics():
    cfg = yaml.safe_load((ROOT / "config" / "pi0.rviz").read_text())
    topics = {d.get("Topic", {}).get("Value") for d in cfg["Visualization Manager"]["Displays"]}
    assert "/pi0_viz/chunk_markers" in topics and "/cam_high/image_raw" in topics
