"""Recorder: topics per embodiment, the ROS-free episode writer, and a real rclpy graph run."""
from __future__ import annotations

import json
import threading
import time

import numpy as np
import pytest
from rosbags.rosbag2 import Reader

from pi0_ros.data import bagio
from pi0_ros.data.record import EPISODE_JSON, EpisodeRecorder, next_episode_index
from pi0_ros.data.topics import EPISODE_TOPIC, record_topic_specs, record_topics
from pi0_ros.robots.embodiment import list_embodiments, load_embodiment


@pytest.mark.parametrize("name", list_embodiments())
def test_record_topics_cover_the_embodiment(name):
    emb = load_embodiment(name)
    topics = dict(record_topics(emb))
    for cam in emb.cameras:
        assert topics[cam.topic] == ("sensor_msgs/msg/CompressedImage" if cam.compressed else "sensor_msgs/msg/Image")
    for t in emb.joint_state_sources.values():
        assert topics[t] == "sensor_msgs/msg/JointState"
    for o in emb.outputs:
        if o.is_action:  # gripper / trajectory actions: goals are not a topic, nothing to record
            assert o.topic not in topics
        else:
            assert topics[o.topic] == o.type
    if emb.odometry_topic:
        assert topics[emb.odometry_topic] == "nav_msgs/msg/Odometry"
    assert topics["/prompt"] == "std_msgs/msg/String"
    assert topics["/action_chunk"] == "pi0_ros/msg/ActionChunk"
    assert topics[EPISODE_TOPIC] == "std_msgs/msg/String"
    assert "/observation" not in topics
    assert len(topics) == len(record_topics(emb))  # each topic once


def test_episode_recorder_without_ros(tmp_path):
    """Bytes in == bytes out, episodes numbered, tags in episode.json and metadata, both storages."""
    store = bagio.typestore()
    specs = [t for t in record_topic_specs("ur5e") if t.topic != EPISODE_TOPIC]
    String = store.types["std_msgs/msg/String"]
    raw = bytes(store.serialize_cdr(String(data="pick"), "std_msgs/msg/String"))
    for storage in ("mcap", "sqlite3"):
        out = tmp_path / storage
        rec = EpisodeRecorder(out, specs, "ur5e", storage=storage)
        rec.on_message("/prompt", 1, raw)  # no episode open: idle
        rec.start("pick up the red cube", t_ns=10)
        for i in range(100):
            rec.on_message("/prompt", 10 + i, raw)
        rec.stop(True, t_ns=200)
        rec.start("second", t_ns=300)
        rec.on_message("/prompt", 301, raw)
        rec.close()
        s = rec.summary()
        assert s["topics"]["/prompt"] == {"received": 101, "written": 101, "dropped": 0, "idle": 1}
        assert next_episode_index(out) == 2
        meta = json.loads((out / "episode_000000" / EPISODE_JSON).read_text())
        assert meta["prompt"] == "pick up the red cube" and meta["success"] is True and meta["storage"] == storage
        assert json.loads((out / "episode_000001" / EPISODE_JSON).read_text())["success"] is None
        with Reader(out / "episode_000000") as r:
            msgs = [(c.topic, t, bytes(d)) for c, t, d in r.messages()]
        assert [m for m in msgs if m[0] == "/prompt"] == [("/prompt", 10 + i, raw) for i in range(100)]
        events = [json.loads(store.deserialize_cdr(d, "std_msgs/msg/String").data) for tp, _, d in msgs if tp == EPISODE_TOPIC]
        assert [e["event"] for e in events] == ["start", "stop"] and events[1]["success"] is True
        assert (out / "episode_000000" / ("episode_000000." + ("mcap" if storage == "mcap" else "db3"))).exists()


@pytest.mark.ros
def test_recorder_node_on_a_real_graph(tmp_path):
    """Publish synthetic ur5e traffic at rate for ~3 s: written == published per topic; bag readable."""
    import rclpy
    from rclpy.executors import MultiThreadedExecutor
    from rclpy.node import Node
    from rclpy.parameter import Parameter
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image, JointState
    from std_msgs.msg import String
    from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

    from pi0_ros.ros.recorder_node import RecorderNode
    from pi0_ros.srv import Episode

    emb = load_embodiment("ur5e")
    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    ex = MultiThreadedExecutor(num_threads=3, context=ctx)
    params = {"embodiment": "ur5e", "output_dir": str(tmp_path), "storage": "mcap"}
    rec = RecorderNode(context=ctx, parameter_overrides=[Parameter(k, value=v) for k, v in params.items()])
    pub_node = Node("fake_robot", context=ctx)
    ex.add_node(rec)
    ex.add_node(pub_node)
    spin = threading.Thread(target=ex.spin, daemon=True)
    spin.start()
    try:
        qos = QoSProfile(depth=200, reliability=ReliabilityPolicy.RELIABLE)
        latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
        cams = {c.topic: pub_node.create_publisher(Image, c.topic, qos) for c in emb.cameras}
        js = pub_node.create_publisher(JointState, "/joint_states", qos)
        arm = pub_node.create_publisher(JointTrajectory, emb.outputs[0].topic, qos)
        prompt = pub_node.create_publisher(String, "/prompt", latched)
        # ur5e's gripper is a GripperCommand action: no topic to record.
        expected = set(cams) | {"/joint_states", emb.outputs[0].topic, "/prompt"}
        end = time.monotonic() + 10
        while time.monotonic() < end and not expected <= set(rec.subscribed):
            time.sleep(0.05)
        assert expected <= set(rec.subscribed), rec.pending_topics
        assert rec.recorder.offered_qos["/prompt"][0].durability.name == "TRANSIENT_LOCAL"
        assert rec.subscribed["/prompt"].durability == DurabilityPolicy.TRANSIENT_LOCAL
        pubs = [*cams.values(), js, arm]
        end = time.monotonic() + 5
        while time.monotonic() < end and not all(p.get_subscription_count() >= 1 for p in pubs):
            time.sleep(0.05)

        client = pub_node.create_client(Episode, "/pi0_recorder/episode")
        assert client.wait_for_service(timeout_sec=5)
        res = client.call(Episode.Request(start=True, prompt="pick up the red cube"), timeout_sec=5)
        assert res.ok and res.episode_index == 0

        names = [d.joint for d in emb.dims]
        img = Image(height=120, width=160, encoding="rgb8", step=480, data=bytes(np.random.default_rng(0).integers(0, 255, 120 * 160 * 3, dtype=np.uint8)))
        published = {t: 0 for t in expected}
        prompt.publish(String(data="pick up the red cube"))
        published["/prompt"] = 1
        t0 = time.monotonic()
        k = 0
        while time.monotonic() - t0 < 3.0:  # 100 Hz joint states, 10 Hz cameras, 20 Hz commands
            js.publish(JointState(name=names, position=[0.01 * k] * len(names)))
            published["/joint_states"] += 1
            if k % 5 == 0:
                arm.publish(JointTrajectory(joint_names=names[:6], points=[JointTrajectoryPoint(positions=[0.1] * 6)]))
                published[emb.outputs[0].topic] += 1
            if k % 10 == 0:
                for t, p in cams.items():
                    p.publish(img)
                    published[t] += 1
            k += 1
            time.sleep(max(0.0, t0 + k * 0.01 - time.monotonic()))
        # Let the last messages arrive, then stop.
        end = time.monotonic() + 5
        while time.monotonic() < end and any(rec.recorder._current.info.received.get(t, 0) < n for t, n in published.items()):
            time.sleep(0.05)
        res = client.call(Episode.Request(start=False, success=True), timeout_sec=5)
        assert res.ok
        summary = rec.finish()
    finally:
        ex.shutdown()
        rec.destroy_node()
        pub_node.destroy_node()
        rclpy.try_shutdown(context=ctx)
    counts = summary["topics"]
    for t, n in published.items():
        assert counts[t]["received"] == n, (t, counts[t], n)
        assert counts[t]["written"] == n, (t, counts[t], n)
        assert counts[t]["dropped"] == 0
    bag = tmp_path / "episode_000000"
    meta = json.loads((bag / EPISODE_JSON).read_text())
    assert meta["success"] is True and meta["prompt"] == "pick up the red cube"
    with Reader(bag) as r:
        assert {c.topic: c.msgcount for c in r.connections if c.topic in published} == published
        for c in r.connections:  # every recorded topic carries its publishers' QoS, as rosbag2 writes it
            if c.topic in published:
                assert c.ext.offered_qos_profiles, c.topic
        store = bagio.typestore(r.connections)
        for c, _, d in r.messages([c for c in r.connections if c.topic == "/joint_states"]):
            msg = store.deserialize_cdr(d, c.msgtype)
            assert list(msg.name) == names
            break


def test_record_launch_file_uses_the_embodiment_topics():
    """`launch` is not on PyPI: check the file statically (it is also covered by test_launch_static)."""
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / "launch" / "record.launch.py").read_text()
    assert "record_topics(embodiment)" in text and '"-s", "mcap"' in text and "OpaqueFunction" in text
    for arg in ("embodiment", "output"):
        assert f'DeclareLaunchArgument("{arg}"' in text


@pytest.mark.ros
def test_record_cli_runs_and_reports_counts(tmp_path, capsys):
    from pi0_ros.cli import main as cli_main

    rc = cli_main(["record", "--embodiment", "ur5e", "--out", str(tmp_path), "--start", "--prompt", "wave",
                   "--duration", "1.0", "--success", "true", "--node-name", "pi0_recorder_cli_test"])
    out = capsys.readouterr().out
    summary = json.loads(out[out.index("{"):])
    assert rc == 0 and summary["episodes"][0]["prompt"] == "wave" and summary["episodes"][0]["success"] is True
    assert set(summary["topics"]) == {t for t, _ in record_topics("ur5e")} - {EPISODE_TOPIC}
    with Reader(tmp_path / "episode_000000") as r:
        assert r.message_count == 3  # the start and stop markers, and the prompt on /prompt
        assert {c.topic for c in r.connections} == {EPISODE_TOPIC, "/prompt"}


@pytest.mark.slow
def test_bench_record_loses_nothing_under_load():
    """3 cameras 640x480 at 30 Hz + 2 x 500 Hz joint states from another process: written == published."""
    import json as _json
    import os
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "pi0_ros.cli", "bench", "record", "--duration", "10", "--json"],
                         capture_output=True, text=True, timeout=180, env=os.environ.copy())
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    d = _json.loads(out.stdout.strip().splitlines()[-1])
    assert d["published"] > 10000 and d["lost"] == 0 and d["written"] == d["published"], d
    assert d["all_acked"], d  # the recorder acknowledged every reliable sample


def _mcap_channels(path):
    """{topic: channel metadata map} read straight from the mcap summary's channel records."""
    import struct

    data = path.read_bytes()
    out, off = {}, 8
    while off < len(data) - 8:
        op, n = data[off], struct.unpack_from("<Q", data, off + 1)[0]
        body = data[off + 9:off + 9 + n]
        if op == 0x04:
            p = 4
            ln = struct.unpack_from("<I", body, p)[0]
            topic = body[p + 4:p + 4 + ln].decode()
            p += 4 + ln
            p += 4 + struct.unpack_from("<I", body, p)[0]  # message encoding
            end = p + 4 + struct.unpack_from("<I", body, p)[0]
            p += 4
            meta = {}
            while p < end:
                kl = struct.unpack_from("<I", body, p)[0]
                k = body[p + 4:p + 4 + kl].decode()
                p += 4 + kl
                vl = struct.unpack_from("<I", body, p)[0]
                meta[k] = body[p + 4:p + 4 + vl].decode()
                p += 4 + vl
            out[topic] = meta
        if op == 0x02:
            break
        off += 9 + n
    return out


def test_bags_carry_what_rosbag2_writes(tmp_path, monkeypatch):
    """Offered QoS per topic, the real ros_distro, type hashes on mcap channels, chunk CRCs, the prompt on /prompt."""
    import yaml
    from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime

    monkeypatch.setenv("ROS_DISTRO", "kilted")
    store = bagio.typestore()
    specs = [t for t in record_topic_specs("ur5e") if t.topic != EPISODE_TOPIC]
    zero = QosTime(0, 0)
    latched = Qos(QosHistory.KEEP_LAST, 1, QosReliability.RELIABLE, QosDurability.TRANSIENT_LOCAL, zero, zero,
                  QosLiveliness.AUTOMATIC, zero, False)
    JointState = store.types["sensor_msgs/msg/JointState"]
    hdr = store.types["std_msgs/msg/Header"](stamp=store.types["builtin_interfaces/msg/Time"](sec=1, nanosec=0), frame_id="")
    raw = bytes(store.serialize_cdr(JointState(header=hdr, name=["a"], position=np.zeros(1), velocity=np.zeros(0),
                                               effort=np.zeros(0)), "sensor_msgs/msg/JointState"))
    rec = EpisodeRecorder(tmp_path, specs, "ur5e", storage="mcap")
    rec.set_offered_qos("/joint_states", [latched._replace(durability=QosDurability.VOLATILE, depth=10)])
    rec.set_offered_qos("/prompt", [latched])
    rec.start("pick up the red cube", t_ns=1_000_000_000)
    for i in range(5):
        rec.on_message("/joint_states", 1_000_000_000 + i, raw)
    rec.stop(True, t_ns=2_000_000_000)
    rec.close()
    bag = tmp_path / "episode_000000"
    meta = yaml.safe_load((bag / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    assert meta["ros_distro"] == "kilted"
    topics = {t["topic_metadata"]["name"]: t for t in meta["topics_with_message_count"]}
    assert topics["/prompt"]["message_count"] == 1  # the episode's prompt, nobody else published one
    qos = topics["/prompt"]["topic_metadata"]["offered_qos_profiles"]
    assert qos and qos[0]["durability"] == "transient_local" and qos[0]["reliability"] == "reliable"
    assert topics["/joint_states"]["topic_metadata"]["offered_qos_profiles"][0]["depth"] == 10
    for t in topics.values():
        assert t["topic_metadata"]["type_description_hash"].startswith("RIHS01_")
    chans = _mcap_channels(next(bag.glob("*.mcap")))
    assert set(chans) == set(topics)
    for topic, m in chans.items():
        assert m["topic_type_hash"] == topics[topic]["topic_metadata"]["type_description_hash"]
        assert "offered_qos_profiles" in m
    counts = bagio.verify_bag(bag)
    assert counts["chunks"] >= 1 and counts["chunks_without_crc"] == 0
    with Reader(bag) as r:
        prompts = [store.deserialize_cdr(d, c.msgtype).data for c, t, d in r.messages() if c.topic == "/prompt"]
    assert prompts == ["pick up the red cube"]
