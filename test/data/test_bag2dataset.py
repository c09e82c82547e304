"""bag2dataset on synthetic bags (mcap + sqlite3): layout, sync, labels, gaps, errors, stats; reader round trip."""
from __future__ import annotations

import json
import os
import logging

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml

from pi0_ros.cli import main as cli_main
from pi0_ros.data.bag2dataset import convert
from pi0_ros.data.bag_read import ConversionError
from pi0_ros.data.dataset import Pi0Dataset
from pi0_ros.data.synthetic import LATENCY_NS, LEAD, T0_NS, robot_state, synthetic_image, write_synthetic_bag
from pi0_ros.images import crop_region
from pi0_ros.model.normalize import load_norm_stats
from pi0_ros.observation import ObservationAssembler
from pi0_ros.model.preprocess import resize_with_pad
from pi0_ros.robots.embodiment import embodiments_dir, load_embodiment

EMB = "ur5e"
STATE_TOL = 2e-3   # linear interpolation of 100 Hz sinusoids (< 0.6 Hz, amplitude < 1)
ACTION_TOL = 1e-5  # float32 storage of the exact held command


@pytest.fixture(scope="module")
def two_bags(tmp_path_factory):
    d = tmp_path_factory.mktemp("bags")
    write_synthetic_bag(d / "episode_000000", EMB, storage="mcap", seed=0, prompt="pick up the red cube", success=True)
    write_synthetic_bag(d / "episode_000001", EMB, storage="sqlite3", seed=1, prompt="stack the blue block", success=False,
                        raw_encoding="bgr8")
    return d


@pytest.fixture(scope="module")
def dataset_dir(two_bags, tmp_path_factory, cropped_ur5e):
    # Converted with a region of interest on the top camera (ur5e.yaml + cameras.base_0_rgb.crop).
    out = tmp_path_factory.mktemp("ds") / "ds"
    summary = convert([two_bags], cropped_ur5e, out, progress=False)
    assert summary["action_source"] == "commands"
    return out


def test_layout_and_info(dataset_dir):
    info = json.loads((dataset_dir / "meta" / "info.json").read_text())
    emb = load_embodiment(EMB)
    assert info["codebase_version"] == "v3.0" and info["fps"] == emb.control_rate_hz
    assert info["total_episodes"] == 2 and info["total_tasks"] == 2
    f = info["features"]
    assert f["observation.state"] == {"dtype": "float32", "shape": [7], "names": emb.dim_names}
    assert f["action"]["shape"] == [7]
    assert f["observation.images.base_0_rgb"]["shape"] == [224, 224, 3]
    for k in ("timestamp", "frame_index", "episode_index", "index", "task_index"):
        assert k in f
    # Exactly LeRobot 0.6.x's info.json: its keys, ints where it writes ints, nothing of ours.
    assert list(info) == ["codebase_version", "fps", "features", "total_episodes", "total_frames", "total_tasks",
                          "chunks_size", "data_files_size_in_mb", "video_files_size_in_mb", "data_path", "video_path",
                          "robot_type", "splits"]
    for k in ("fps", "chunks_size", "data_files_size_in_mb", "video_files_size_in_mb", "total_frames"):
        assert type(info[k]) is int and info[k] > 0, k
    ours = json.loads((dataset_dir / "meta" / "pi0_ros.json").read_text())
    assert ours["action_source"] == "commands" and ours["embodiment"] == EMB
    data = pq.read_table(dataset_dir / "data" / "chunk-000" / "file-000.parquet")
    assert data.num_rows == info["total_frames"]
    assert set(data.column_names) == set(f)
    assert json.loads(data.schema.metadata[b"huggingface"])["info"]["features"]["observation.images.base_0_rgb"] == {"_type": "Image"}
    eps = pq.read_table(dataset_dir / "meta" / "episodes" / "chunk-000" / "file-000.parquet").to_pylist()
    assert [e["success"] for e in eps] == [True, False]
    assert eps[0]["dataset_to_index"] == eps[1]["dataset_from_index"]
    assert sum(e["length"] for e in eps) == info["total_frames"]
    assert eps[0]["stats/action/q50"] and len(eps[0]["stats/observation.images.base_0_rgb/q10"]) == 3
    assert eps[0]["stats/observation.state/count"] == [eps[0]["length"]]
    # tasks.parquet: a pandas frame indexed by the task, as LeRobot reads it (task -> task_index).
    t = pq.read_table(dataset_dir / "meta" / "tasks.parquet")
    assert json.loads(t.schema.metadata[b"pandas"])["index_columns"] == ["task"]
    assert t.to_pydict() == {"task_index": [0, 1], "task": ["pick up the red cube", "stack the blue block"]}
    # Images: PNG bytes inside the parquet, no files beside it.
    first = data.slice(0, 1).to_pylist()[0]["observation.images.base_0_rgb"]
    assert first["bytes"][:8] == b"\x89PNG\r\n\x1a\n" and first["path"] == "frame-000000.png"
    assert not (dataset_dir / "images").exists()


def test_state_actions_and_images_are_synchronised(dataset_dir, cropped_ur5e):
    emb = load_embodiment(cropped_ur5e)
    ds = Pi0Dataset(dataset_dir, chunk_size=10, convention="robot")
    eps = pq.read_table(dataset_dir / "meta" / "episodes" / "chunk-000" / "file-000.parquet").to_pylist()
    for seed, e in enumerate(eps):
        rows = slice(e["dataset_from_index"], e["dataset_to_index"])
        t = (e["source_start_ns"] - T0_NS) * 1e-9 + np.arange(e["length"]) / ds.fps
        np.testing.assert_allclose(ds.state_robot[rows], robot_state(emb, t, seed), atol=STATE_TOL)
        # Zero-order hold of the 50 Hz commands (stamped on receipt, 1 ms after they were sent).
        t_cmd = np.floor((t - LATENCY_NS * 1e-9) * 50 + 1e-6) / 50
        cmd = [i for o in emb.outputs if not o.is_action for i in o.indices]
        np.testing.assert_allclose(ds.action_robot[rows][:, cmd], robot_state(emb, t_cmd + LEAD, seed)[:, cmd],
                                   atol=ACTION_TOL)
        # Dims of action outputs (ur5e's GripperCommand gripper) have no command topic: the next state.
        act = [i for o in emb.outputs if o.is_action for i in o.indices]
        np.testing.assert_allclose(ds.action_robot[rows][:-1, act], ds.state_robot[rows][1:, act], atol=1e-6)
        # Images: nearest 10 Hz camera frame, cut to the camera's region of interest
        # (cameras.base_0_rgb.crop), resized with pad (jpeg: loose tolerance).
        k = e["dataset_from_index"] + 7
        t_cam = np.round(t[7] * 10) / 10
        crop = next(c.crop for c in emb.cameras if c.slot == "base_0_rgb")
        assert crop is not None
        frame = synthetic_image(robot_state(emb, np.array([t_cam]), seed)[0])
        want = resize_with_pad(crop_region(frame, crop), 224, 224)
        got = ds.read_image("base_0_rgb", k)
        assert np.abs(got.astype(int) - want.astype(int)).mean() < 4.0  # bgr8 decoded as RGB too


def test_stats_match_numpy(dataset_dir):
    emb = load_embodiment(EMB)
    ds = Pi0Dataset(dataset_dir, convention="robot", load_images=False)
    stats = json.loads((dataset_dir / "meta" / "stats.json").read_text())
    for key, x in (("observation.state", ds.state_robot), ("action", ds.action_robot)):
        x = x.astype(np.float64)
        s = stats[key]
        np.testing.assert_allclose(s["mean"], x.mean(0), rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(s["std"], x.std(0), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(s["min"], x.min(0), atol=1e-6)
        np.testing.assert_allclose(s["max"], x.max(0), atol=1e-6)
        np.testing.assert_allclose(s["q01"], np.quantile(x, 0.01, axis=0), atol=1e-5)
        for q in (0.01, 0.10, 0.50, 0.90, 0.99):
            np.testing.assert_allclose(s[f"q{int(round(q * 100)):02d}"], np.quantile(x, q, axis=0), atol=1e-5)
        assert s["count"] == [len(x)]
    assert np.array(stats["observation.images.base_0_rgb"]["mean"]).shape == (3, 1, 1)
    norm = load_norm_stats(dataset_dir / "norm_stats.json")
    model_state = emb.to_model(ds.state_robot.astype(np.float64))
    np.testing.assert_allclose(norm["state"].mean, model_state.mean(0), atol=1e-5)
    np.testing.assert_allclose(norm["actions"].q99, np.quantile(emb.to_model(ds.action_robot.astype(np.float64)), 0.99, axis=0), atol=1e-5)
    assert norm["state"].dim == emb.num_dims
    assert 0.0 <= norm["state"].q01[6] and norm["state"].q99[6] <= 1.0  # gripper in model convention


def test_reader_round_trip_and_action_chunks(dataset_dir):
    ds = Pi0Dataset(dataset_dir, chunk_size=50)
    robot = Pi0Dataset(dataset_dir, chunk_size=50, convention="robot", load_images=False)
    assert len(ds) == json.loads((dataset_dir / "meta" / "info.json").read_text())["total_frames"]
    s = ds[3]
    assert s["images"]["base_0_rgb"].shape == (224, 224, 3) and s["images"]["base_0_rgb"].dtype.is_floating_point is False
    assert s["state"].shape == (7,) and s["actions"].shape == (50, 7)
    assert s["prompt"] == "pick up the red cube"
    np.testing.assert_allclose(s["actions"].numpy(), ds.action[3:53])
    # Gripper in [0, 1] in model convention; robot units otherwise.
    emb = load_embodiment(EMB)
    np.testing.assert_allclose(ds.state, emb.to_model(robot.state.astype(np.float64)), atol=1e-6)
    # The episode end: repeated last action + mask.
    end = int(robot.episode_end[0])
    s = ds[end - 5]
    assert s["action_is_pad"].tolist() == [False] * 5 + [True] * 45
    np.testing.assert_allclose(s["actions"][5:].numpy(), np.repeat(ds.action[end - 1][None], 45, 0))
    assert ds[end]["prompt"] == "stack the blue block" and ds[end]["frame_index"] == 0


def test_next_state_labels_without_commands(tmp_path):
    write_synthetic_bag(tmp_path / "b", EMB, command_rate=None)
    summary = convert([tmp_path / "b"], EMB, tmp_path / "ds", progress=False)
    assert summary["action_source"] == "next_state"
    ds = Pi0Dataset(tmp_path / "ds", convention="robot", load_images=False)
    np.testing.assert_array_equal(ds.action[:-1], ds.state[1:])
    np.testing.assert_array_equal(ds.action[-1], ds.state[-1])
    with pytest.raises(ConversionError, match="no commands on"):
        convert([tmp_path / "b"], EMB, tmp_path / "ds2", actions="commands", progress=False)


def test_missing_topic_names_bag_and_topic(tmp_path):
    bag = write_synthetic_bag(tmp_path / "b", EMB, skip_topics=["/camera/wrist/image_raw"])
    with pytest.raises(ConversionError, match=r"b: topic /camera/wrist/image_raw \(camera left_wrist_0_rgb\) is missing"):
        convert([bag], EMB, tmp_path / "ds", progress=False)


def test_empty_episode_is_an_error(tmp_path):
    bag = write_synthetic_bag(tmp_path / "b", EMB, duration=0.05)
    with pytest.raises(ConversionError, match="empty episode"):
        convert([bag], EMB, tmp_path / "ds", progress=False)


def test_time_gap_split_or_reject(tmp_path, caplog):
    bag = write_synthetic_bag(tmp_path / "b", EMB, duration=4.0, gaps=[(1.5, 2.5)], storage="sqlite3")
    with pytest.raises(ConversionError, match=r"time gap of 1\.\d+ s on /.* at 1\.\d+ s"):
        convert([bag], EMB, tmp_path / "r", on_gap="reject", progress=False)
    with caplog.at_level(logging.WARNING):
        summary = convert([bag], EMB, tmp_path / "s", on_gap="split", progress=False)
    assert summary["episodes"] == 2
    assert "splitting the episode" in caplog.text
    eps = pq.read_table(tmp_path / "s" / "meta" / "episodes" / "chunk-000" / "file-000.parquet").to_pylist()
    assert all(e["source_end_ns"] < T0_NS + 1.5e9 or e["source_start_ns"] >= T0_NS + 2.5e9 for e in eps)


def test_dataset_images_are_what_the_observation_node_gives_the_policy(dataset_dir, cropped_ur5e):
    """Train/serve parity: a camera frame converted into the dataset is byte for byte the image the
    observation node assembles from the same frame (region of interest, resize_with_pad; PNG)."""
    emb = load_embodiment(cropped_ur5e)
    ds = Pi0Dataset(dataset_dir, chunk_size=10, convention="robot")
    assert ds.camera_crops == {c.slot: c.crop for c in emb.cameras}   # recorded: training passes them on
    e = pq.read_table(dataset_dir / "meta" / "episodes" / "chunk-000" / "file-000.parquet").to_pylist()[0]  # rgb8
    t = (e["source_start_ns"] - T0_NS) * 1e-9 + np.arange(e["length"]) / ds.fps
    for k in (2, 12):  # frames next to a 10 Hz camera frame (no tie between two)
        t_cam = np.round(t[k] * 10) / 10
        frame = synthetic_image(robot_state(emb, np.array([t_cam]), 0)[0])
        asm = ObservationAssembler(emb)
        for s, topic in emb.joint_state_sources.items():
            dims = [d for d in emb.dims if d.source == s]
            asm.add_joint_state(s, t_cam, [d.joint for d in dims], [0.0] * len(dims))
        for c in emb.cameras:
            asm.add_image(c.slot, t_cam, frame)
        live = asm.assemble(t_cam + 0.01).observation.images
        for slot in ("base_0_rgb", "left_wrist_0_rgb"):
            np.testing.assert_array_equal(ds.read_image(slot, e["dataset_from_index"] + k), live[slot])


def test_markers_split_one_bag_and_compressed_cameras(tmp_path):
    """A bag from `ros2 bag record` (no episode.json) with markers; CompressedImage cameras."""
    spec = yaml.safe_load((embodiments_dir() / f"{EMB}.yaml").read_text())
    spec["cameras"]["base_0_rgb"]["compressed"] = True
    spec["cameras"]["base_0_rgb"]["topic"] = "/camera/base/image_raw/compressed"
    yml = tmp_path / "ur5e_compressed.yaml"
    yml.write_text(yaml.safe_dump(spec))
    emb = load_embodiment(yml)
    bag = write_synthetic_bag(tmp_path / "b", emb, markers=True, episode_json=False, prompt="open the drawer")
    summary = convert([bag], str(yml), tmp_path / "ds", progress=False)
    assert summary["episodes"] == 1
    ds = Pi0Dataset(tmp_path / "ds", chunk_size=4)
    assert ds[0]["prompt"] == "open the drawer" and ds[0]["images"]["base_0_rgb"].shape == (224, 224, 3)


def test_prompt_required(tmp_path):
    bag = write_synthetic_bag(tmp_path / "b", EMB, episode_json=False, skip_topics=["/prompt"])
    with pytest.raises(ConversionError, match="pass --prompt"):
        convert([bag], EMB, tmp_path / "ds", progress=False)
    assert convert([bag], EMB, tmp_path / "ds2", prompt="wipe the table", progress=False)["episodes"] == 1


def test_cli(two_bags, tmp_path, capsys):
    rc = cli_main(["bag2dataset", str(two_bags / "episode_000000"), "--embodiment", EMB, "--out", str(tmp_path / "ds"),
                   "--fps", "10", "--quiet"])
    captured = capsys.readouterr()
    assert rc == 0 and "action labels: commands" in captured.err
    assert json.loads(captured.out)["action_source"] == "commands"  # stdout is pure JSON
    assert json.loads((tmp_path / "ds" / "meta" / "info.json").read_text())["fps"] == 10
    rc = cli_main(["bag2dataset", str(tmp_path / "nope"), "--embodiment", EMB, "--out", str(tmp_path / "x"), "--quiet"])
    assert rc == 1 and "no such bag" in capsys.readouterr().err


def test_video_dataset_matches_the_png_one(two_bags, dataset_dir, tmp_path, cropped_ur5e):
    """--video: one AV1 mp4 per camera (PyAV), LeRobot's video features; frames decode back to the PNG frames."""
    pytest.importorskip("av")
    from pi0_ros.data.no_realtime import realtime_threads

    before = realtime_threads()
    convert([two_bags], cropped_ur5e, tmp_path / "v", video=True, progress=False)
    # SVT-AV1 makes the threads it opens the encoder from, and its workers, SCHED_FIFO 99 where it
    # may (root): the converter must leave no thread of the process real-time.
    assert os.sched_getscheduler(0) == os.SCHED_OTHER and realtime_threads() <= before
    info = json.loads((tmp_path / "v" / "meta" / "info.json").read_text())
    f = info["features"]["observation.images.base_0_rgb"]
    assert f["dtype"] == "video" and f["info"]["video.codec"] == "av1" and info["video_path"].endswith(".mp4")
    assert (tmp_path / "v" / "videos" / "observation.images.base_0_rgb" / "chunk-000" / "file-000.mp4").is_file()
    eps = pq.read_table(tmp_path / "v" / "meta" / "episodes" / "chunk-000" / "file-000.parquet").to_pylist()
    assert eps[1]["videos/observation.images.base_0_rgb/from_timestamp"] == pytest.approx(eps[0]["length"] / info["fps"])
    data = pq.read_table(tmp_path / "v" / "data" / "chunk-000" / "file-000.parquet")
    assert "observation.images.base_0_rgb" not in data.column_names
    vid, png = Pi0Dataset(tmp_path / "v", chunk_size=2), Pi0Dataset(dataset_dir, chunk_size=2)
    assert len(vid) == len(png)
    for i in (0, 5, eps[0]["length"] - 1, eps[0]["length"], len(png) - 1):
        for slot in ("base_0_rgb", "left_wrist_0_rgb"):
            a = vid[i]["images"][slot].numpy().astype(float)
            b = png[i]["images"][slot].numpy().astype(float)
            assert np.abs(a - b).mean() < 3.0, (i, slot)
