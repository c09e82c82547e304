"""A checkpoint's inference.json (pi0_ros.inference_settings): parsing, validation, precedence
(given > checkpoint > default), the command-line options of eval/demo/serve, and the files that
ship (the demo checkpoint's settings; parameters files that leave them to the checkpoint)."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
import yaml

from pi0_ros import inference_settings as isettings
from pi0_ros.inference_settings import CheckpointSettings, InferenceSettingsError

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "checkpoints" / "pi0_sim_aloha_pick_cube"


def _write(d: Path, data) -> Path:
    (d / isettings.FILENAME).write_text(json.dumps(data) if not isinstance(data, str) else data)
    return d


def test_load_reads_the_settings_and_where_they_were_validated(tmp_path):
    _write(tmp_path, {"realtime_chunking": True, "noise_scale": 0, "execute_steps": 12,
                      "validated": {"success_rate": 0.5, "successes": 5, "episodes": 10, "embodiment": "ur5e",
                                    "task": "pick_cube", "seeds": "0-9"}})
    s = isettings.load(tmp_path)
    assert s and s.path == tmp_path / "inference.json"
    assert s.values == {"realtime_chunking": True, "noise_scale": 0.0, "execute_steps": 12}
    assert isinstance(s.values["noise_scale"], float)        # a JSON 0 becomes the float a ROS double needs
    assert s.validation() == "success 50 % (5/10), on ur5e pick_cube, seeds 0-9"


@pytest.mark.parametrize("checkpoint", ["", None])
def test_no_checkpoint_or_no_file_is_empty(tmp_path, checkpoint):
    assert not isettings.load(checkpoint) and isettings.load(checkpoint).values == {}
    assert not isettings.load(tmp_path) and isettings.load(tmp_path).path is None


@pytest.mark.parametrize("data, match", [
    ({"noise_scale": 1.5}, "noise_scale must be a number within"),
    ({"noise_scale": -0.1}, "noise_scale must be a number within"),
    ({"noise_scale": "0"}, "noise_scale must be a number within"),
    ({"noise_scale": True}, "noise_scale must be a number within"),
    ({"execute_steps": 0}, "execute_steps must be an integer >= 1"),
    ({"execute_steps": 2.5}, "execute_steps must be an integer >= 1"),
    ({"execute_steps": True}, "execute_steps must be an integer >= 1"),
    ({"num_steps": 0}, "num_steps must be an integer >= 1"),
    ({"realtime_chunking": 1}, "realtime_chunking must be true or false"),
    ({"realtime_chunking": "true"}, "realtime_chunking must be true or false"),
    ({"realtime_chunk": True}, r"unknown keys \['realtime_chunk'\]"),
    ({"validated": "96 %"}, "'validated' must be an object"),
    ([1, 2], "expected a JSON object"),
    ("{not json", "cannot read"),
])
def test_invalid_files_are_refused_with_the_file_named(tmp_path, data, match):
    _write(tmp_path, data)
    with pytest.raises(InferenceSettingsError, match=match) as e:
        isettings.load(tmp_path)
    assert str(tmp_path / "inference.json") in str(e.value)


def test_given_beats_checkpoint_beats_default(tmp_path):
    ckpt = isettings.load(_write(tmp_path, {"realtime_chunking": True, "noise_scale": 0.0}))
    names = ("realtime_chunking", "noise_scale", "num_steps")
    r = isettings.resolve(names, {}, ckpt, isettings.DEFAULTS)
    assert {k: s.value for k, s in r.items()} == {"realtime_chunking": True, "noise_scale": 0.0, "num_steps": 10}
    assert r["realtime_chunking"].source == f"checkpoint {tmp_path / 'inference.json'}"
    assert r["num_steps"].source == "default"
    # An explicit value wins, also when it equals the code default.
    r = isettings.resolve(names, {"realtime_chunking": False, "noise_scale": 1.0}, ckpt, isettings.DEFAULTS,
                          given_as="option")
    assert (r["realtime_chunking"].value, r["realtime_chunking"].source) == (False, "option")
    assert (r["noise_scale"].value, r["noise_scale"].source) == (1.0, "option")
    # Nothing in the checkpoint: the defaults.
    r = isettings.resolve(names, {}, CheckpointSettings(), isettings.DEFAULTS)
    assert {k: s.value for k, s in r.items()} == isettings.DEFAULTS
    assert "realtime_chunking false (default)" in isettings.describe(r)


def test_given_values_are_checked_too():
    with pytest.raises(InferenceSettingsError, match="option: noise_scale must be a number within"):
        isettings.resolve(["noise_scale"], {"noise_scale": 2.0}, CheckpointSettings(), isettings.DEFAULTS, "option")


def test_write_round_trips_and_refuses_unknown_settings(tmp_path):
    path = isettings.write(tmp_path, {"noise_scale": 0, "realtime_chunking": True}, validated={"episodes": 3})
    assert json.loads(path.read_text()) == {"realtime_chunking": True, "noise_scale": 0.0, "validated": {"episodes": 3}}
    assert isettings.load(tmp_path).values == {"realtime_chunking": True, "noise_scale": 0.0}
    with pytest.raises(InferenceSettingsError, match="unknown settings"):
        isettings.write(tmp_path, {"noise": 0})


def test_embodiment_mismatch_is_reported(tmp_path):
    ckpt = isettings.load(_write(tmp_path, {"execute_steps": 25, "validated": {"embodiment": "trossen_bimanual"}}))
    assert "validated on 'trossen_bimanual', this is 'ur5e'" in isettings.embodiment_mismatch(ckpt, "ur5e")
    assert isettings.embodiment_mismatch(ckpt, "trossen_bimanual") == ""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser()
    isettings.add_arguments(p)
    return p


def test_options_not_given_stay_none_so_the_checkpoint_decides():
    assert isettings.given_from_args(_parser().parse_args([])) == {}
    given = isettings.given_from_args(_parser().parse_args(["--no-realtime-chunking", "--noise-scale", "1",
                                                             "--execute-steps", "10"]))
    assert given == {"realtime_chunking": False, "noise_scale": 1.0, "execute_steps": 10}
    assert isettings.node_params(given) == {"policy": {"realtime_chunking": False, "noise_scale": 1.0},
                                            "executor": {"execute_steps": 10}}
    with pytest.raises(InferenceSettingsError, match="--noise-scale: noise_scale must be"):
        isettings.given_from_args(_parser().parse_args(["--noise-scale", "3"]))


@pytest.mark.parametrize("module", ["pi0_ros.evaluation", "pi0_ros.ros.demo", "pi0_ros.serving.server"])
def test_eval_demo_and_serve_default_to_not_given(module):
    import importlib

    p = argparse.ArgumentParser()
    importlib.import_module(module).add_arguments(p)
    args = p.parse_args([])
    for k in ("noise_scale", "num_steps") + (() if module.endswith("server") else ("realtime_chunking", "execute_steps")):
        assert getattr(args, k) is None, k


def test_serve_takes_the_checkpoints_sampler_settings_unless_given(tmp_path):
    from pi0_ros.serving.server import add_arguments, sampler_settings

    _write(tmp_path, {"noise_scale": 0.0, "num_steps": 4})
    p = argparse.ArgumentParser()
    add_arguments(p)
    r = sampler_settings(p.parse_args(["--checkpoint", str(tmp_path)]))
    assert (r["noise_scale"].value, r["num_steps"].value) == (0.0, 4)
    r = sampler_settings(p.parse_args(["--checkpoint", str(tmp_path), "--noise-scale", "1"]))
    assert (r["noise_scale"].value, r["noise_scale"].source, r["num_steps"].value) == (1.0, "option", 4)


def test_the_shipped_checkpoint_carries_the_settings_it_was_validated_with():
    s = isettings.load(SHIPPED)
    assert s.values == {"realtime_chunking": True, "noise_scale": 0.0, "execute_steps": 25, "num_steps": 10}
    v = s.validated
    assert (v["success_rate"], v["successes"], v["episodes"], v["seeds"]) == (0.96, 48, 50, "1000-1049")
    assert v["embodiment"] == "trossen_bimanual"


def test_parameters_files_leave_the_settings_to_the_checkpoint():
    """A value in config/params/*.yaml counts as given (ros2 launch passes the file): it would
    hide the checkpoint's inference.json."""
    for p in sorted((ROOT / "config" / "params").glob("*.yaml")):
        data = yaml.safe_load(p.read_text())
        assert not set(isettings.SETTINGS) & set(data["pi0_policy"]["ros__parameters"]), p.name
        assert not set(isettings.SETTINGS) & set(data["pi0_executor"]["ros__parameters"]), p.name


def test_inference_threads_leave_cores_to_others_unless_told():
    from pi0_ros.inference_settings import inference_threads

    assert inference_threads(0, 2) == 1        # auto: half the cores (the 2-core box: 1)
    assert inference_threads(0, 16) == 8
    assert inference_threads(0, 1) == 1 and inference_threads(0, None) == 1
    assert inference_threads(3, 2) == 3        # given: as given
    assert inference_threads(-1, 8) is None    # torch's default, untouched
    with pytest.raises(ValueError, match="torch_threads"):
        inference_threads(-2, 8)


def test_validation_of_a_multi_robot_file_names_the_robots_own_result(tmp_path):
    # tools/eval_multirobot.sh writes one result per robot under `embodiments`; the policy node
    # logs the line for the robot it runs, not a line without any rate ("validated with on ...").
    _write(tmp_path, {"realtime_chunking": True, "validated": {
        "task": "pick_cube", "episodes": 50, "seeds": "1000-1049",
        "embodiments": {"ur5e": {"success_rate": 0.78, "successes": 39, "swapped_success_rate": 0.8,
                                 "lockstep_success_rate": 0.8},
                        "franka": {"success_rate": 0.86, "successes": 43}}}})
    s = isettings.load(tmp_path)
    assert s.validation("ur5e") == "success 78 % (39/50), 80 % in lockstep, on ur5e pick_cube, seeds 1000-1049"
    assert s.validation("franka") == "success 86 % (43/50), on franka pick_cube, seeds 1000-1049"
    assert s.validation("trossen_bimanual") == \
        "not on trossen_bimanual (on franka, ur5e), on pick_cube, seeds 1000-1049"
    assert s.validation() == "on pick_cube, seeds 1000-1049"
