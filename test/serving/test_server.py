"""pi0-ros serve against the real openpi-client from PyPI, and RemotePolicy against servers
that work, die, stall or answer garbage. Servers bind 127.0.0.1 on free ports."""
from __future__ import annotations

import http.client
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import websockets
from openpi_client.websocket_client_policy import WebsocketClientPolicy
from websockets.sync.client import connect
from websockets.sync.server import serve

from pi0_ros.policy import Policy, PolicyInput
from pi0_ros.realtime_chunking import ChunkGuide
from pi0_ros.serving.client import RemotePolicy, RemotePolicyError
from pi0_ros.serving.process import ServeProcess
from pi0_ros.serving.protocol import packb, unpackb
from pi0_ros.serving.server import PolicyServer

from test_protocol import openpi_examples

# openpi-client 0.1.2 opens its connection without a context manager (websockets >= 14 warns).
pytestmark = pytest.mark.filterwarnings("ignore:connect\\(\\) must be used:DeprecationWarning")

CHECKPOINT = Path(__file__).resolve().parents[2] / "checkpoints" / "pi0_sim_aloha_pick_cube"
H, D = 50, 32


@pytest.fixture(scope="module")
def policy():
    return Policy.tiny_random(seed=0, num_cameras=3)


@pytest.fixture
def server(policy):
    with PolicyServer(policy, port=0, max_request_bytes=2 << 20) as s:
        yield s


def _hwc(img):
    return img.transpose(1, 2, 0)


def local_input(name, obs):
    """The same observation as a local PolicyInput (slots and state by hand, not via key sets)."""
    if name == "aloha":
        im = obs["images"]
        return PolicyInput(images={"base_0_rgb": _hwc(im["cam_high"]), "left_wrist_0_rgb": _hwc(im["cam_left_wrist"]),
                                   "right_wrist_0_rgb": _hwc(im["cam_right_wrist"])},
                           state=np.r_[obs["state"], np.zeros(D - 14)], prompt=obs["prompt"]), 14
    if name == "droid":
        return PolicyInput(images={"base_0_rgb": obs["observation/exterior_image_1_left"],
                                   "left_wrist_0_rgb": obs["observation/wrist_image_left"]},
                           state=np.r_[obs["observation/joint_position"], obs["observation/gripper_position"],
                                       np.zeros(D - 8)], prompt=obs["prompt"]), 8
    return PolicyInput(images={"base_0_rgb": obs["observation/image"], "left_wrist_0_rgb": obs["observation/wrist_image"]},
                       state=np.r_[obs["observation/state"], np.zeros(D - 8)], prompt=obs["prompt"]), 7


@pytest.mark.parametrize("name", ["aloha", "droid", "libero"])
def test_openpi_client_gets_the_local_policys_actions(server, policy, name):
    client = WebsocketClientPolicy("127.0.0.1", port=server.port)
    meta = client.get_server_metadata()
    assert meta["server"] == "pi0_ros" and (meta["action_dim"], meta["chunk_size"]) == (D, H)
    obs = openpi_examples()[name]
    noise = np.random.default_rng(3).normal(size=(H, D)).astype(np.float32)
    reply = client.infer({**obs, "pi0_ros/noise": noise})
    inp, width = local_input(name, obs)
    expected = policy.infer(inp, noise=noise).actions[:, :width]
    assert reply["actions"].shape == (H, width) and reply["key_set"] == name
    np.testing.assert_array_equal(reply["actions"], expected)
    assert reply["policy_timing"]["model_ms"] > 0 and reply["server_timing"]["infer_ms"] > 0
    second = client.infer({**obs, "pi0_ros/noise": noise})       # openpi's prev_total_ms from the 2nd reply
    assert second["server_timing"]["prev_total_ms"] > 0
    np.testing.assert_array_equal(second["actions"], expected)


def test_pi0_ros_serve_process_equals_local_policy_on_the_demo_checkpoint():
    """The issue's acceptance: openpi-client's infer() against `pi0-ros serve` == local Policy.infer."""
    local = Policy.from_checkpoint(CHECKPOINT, noise_scale=0.0)
    with ServeProcess(["--checkpoint", str(CHECKPOINT), "--noise-scale", "0", "--warmup", "0"]) as proc:
        with urlopen_health(proc.uri) as status:
            assert status == 200
        client = WebsocketClientPolicy(proc.uri)
        assert client.get_server_metadata()["image_size"] == 112
        obs = openpi_examples()["aloha"]
        obs["state"] = np.random.default_rng(0).normal(size=14) * 0.2
        noise = np.random.default_rng(5).normal(size=(H, D)).astype(np.float32)
        for extra, kw in (({"pi0_ros/noise": noise}, {"noise": noise}), ({}, {})):   # given noise; noise_scale 0
            reply = client.infer({**obs, **extra})
            inp, width = local_input("aloha", obs)
            expected = local.infer(inp, **kw).actions[:, :width]
            # Another process, possibly another thread count: float32 summation order may differ.
            np.testing.assert_allclose(reply["actions"], expected, rtol=0, atol=1e-5)


class urlopen_health:
    def __init__(self, uri: str) -> None:
        host, port = uri.removeprefix("ws://").split(":")
        self.conn = http.client.HTTPConnection(host, int(port), timeout=5)

    def __enter__(self) -> int:
        self.conn.request("GET", "/healthz")
        r = self.conn.getresponse()
        assert r.read() == b"OK\n"
        return r.status

    def __exit__(self, *exc) -> None:
        self.conn.close()


def _expect_error_then_close(ws, code: int, match: str) -> None:
    msg = ws.recv(timeout=10)
    assert isinstance(msg, str) and match in msg, msg
    with pytest.raises(websockets.ConnectionClosed) as e:
        ws.recv(timeout=10)
    assert e.value.rcvd.code == code


@pytest.mark.parametrize("payload,match", [
    (b"\xc1garbage", "not a valid msgpack"),
    ("a text frame", "text frame"),
    (packb([1, 2, 3]), "must be a map"),
    (packb({"state": np.ones(14), "images": {"cam_high": np.ones((3, 4), np.uint8)}}), "cam_high"),
    (packb({"foo": 1}), "match no key set"),
    (b"\x81\xa1x\x84\xc4\x0b__ndarray__\xc3\xc4\x04data\xc4\x01\x00\xc4\x05dtype\xa2|O\xc4\x05shape\x91\x01",
     "unsupported dtype"),
])
def test_malformed_requests_get_a_text_frame_then_1008_and_the_server_lives_on(server, payload, match):
    with connect(server.uri, compression=None, proxy=None) as ws:
        assert unpackb(ws.recv(timeout=10))["server"] == "pi0_ros"     # metadata first
        ws.send(payload)
        _expect_error_then_close(ws, 1008, match)
    client = WebsocketClientPolicy(server.uri)
    assert client.infer(openpi_examples()["libero"])["actions"].shape == (H, 7)


def test_oversized_message_closes_with_1009(server):
    with connect(server.uri, compression=None, proxy=None, max_size=None) as ws:
        ws.recv(timeout=10)
        ws.send(packb({"state": np.zeros(3 << 20, np.uint8)}))      # 3 MiB > the 2 MiB bound
        with pytest.raises(websockets.ConnectionClosed) as e:
            ws.recv(timeout=10)
        assert e.value.rcvd.code == 1009
    assert WebsocketClientPolicy(server.uri).infer(openpi_examples()["libero"])["actions"].shape == (H, 7)


def test_api_key_and_client_limit(policy):
    with PolicyServer(policy, port=0, api_key="s3cret", max_clients=1) as s:
        with pytest.raises(websockets.InvalidStatus, match="401"):
            WebsocketClientPolicy(s.uri, api_key="wrong")
        with urlopen_health(s.uri) as status:                           # health needs no key
            assert status == 200
        first = WebsocketClientPolicy(s.uri, api_key="s3cret")
        with pytest.raises(websockets.InvalidStatus, match="503"):
            WebsocketClientPolicy(s.uri, api_key="s3cret")
        assert first.infer(openpi_examples()["droid"])["actions"].shape == (H, 8)


def test_remote_policy_equals_local_including_the_realtime_chunking_guide(server, policy):
    remote = RemotePolicy(server.uri)
    remote.warmup()
    assert remote.connected and remote.key_set.name == "pi0_ros" and remote.action_dim == D
    rng = np.random.default_rng(2)
    images = {s: rng.integers(0, 256, (224, 224, 3), dtype=np.uint8) for s in ("base_0_rgb", "right_wrist_0_rgb")}
    guide = ChunkGuide(rng.normal(size=(H, D)), np.r_[np.ones(10), np.linspace(1, 0, 20), np.zeros(20)])
    inp = PolicyInput(images=images, state=np.r_[rng.normal(size=14), np.zeros(D - 14)], prompt="go", guide=guide)
    noise = rng.normal(size=(H, D)).astype(np.float32)
    out = remote.infer(inp, noise=noise)
    np.testing.assert_array_equal(out.actions, policy.infer(inp, noise=noise).actions)
    assert out.timing["total"] >= out.timing["model"] > 0
    assert 224 * 224 * 3 * 2 < remote.bytes_sent < 224 * 224 * 3 * 2 + 25_000     # 2 raw uint8 cameras + guide
    remote.close()


def test_remote_policy_through_a_killed_and_restarted_server():
    with ServeProcess(["--warmup", "0", "--torch-threads", "1"]) as proc:
        port = int(proc.uri.rsplit(":", 1)[1])
        remote = RemotePolicy(proc.uri, request_timeout=30, backoff_min=0.2, backoff_max=0.4)
        inp = PolicyInput(images={}, state=np.zeros(D), prompt="x")
        assert remote.infer(inp).actions.shape == (H, D)
        proc.kill()
        with pytest.raises(RemotePolicyError, match="lost|cannot connect"):
            remote.infer(inp)
        with pytest.raises(RemotePolicyError, match="cannot connect|next attempt"):
            remote.infer(inp)
        assert not remote.connected
        with ServeProcess(["--warmup", "0", "--torch-threads", "1"], port=port):
            deadline = time.monotonic() + 30
            while True:
                try:
                    out = remote.infer(inp)
                    break
                except RemotePolicyError:
                    assert time.monotonic() < deadline
                    time.sleep(0.1)
            assert out.actions.shape == (H, D) and remote.connected
            remote.close()


class FakeOpenpiServer:
    """A foreign openpi-protocol server: metadata {}, then `reply(obs)` per message."""

    def __init__(self, reply) -> None:
        self.reply, self.seen = reply, []

        def handler(ws):
            ws.send(packb({}))
            try:
                while True:
                    obs = unpackb(ws.recv())
                    self.seen.append(obs)
                    r = self.reply(obs)
                    ws.send(r if isinstance(r, (bytes, str)) else packb(r))
            except websockets.ConnectionClosed:
                pass

        self.server = serve(handler, "127.0.0.1", 0, compression=None)
        self.uri = f"ws://127.0.0.1:{self.server.socket.getsockname()[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.server.shutdown()


ALOHA_INPUT = PolicyInput(images={"base_0_rgb": np.zeros((224, 224, 3), np.uint8)}, state=np.r_[np.ones(14), np.zeros(18)],
                          prompt="fold")


def test_foreign_server_gets_the_aloha_layout_and_rtc_is_applied_client_side():
    chunk = np.full((H, 14), 2.0)
    with FakeOpenpiServer(lambda obs: {"actions": chunk}) as fake:
        with pytest.raises(RemotePolicyError, match="not pi0-ros serve"):
            RemotePolicy(fake.uri).infer(ALOHA_INPUT)
        remote = RemotePolicy(fake.uri, "aloha")
        guide = ChunkGuide(np.zeros((H, D)), np.r_[np.ones(5), np.full(5, 0.5), np.zeros(40)])
        out = remote.infer(PolicyInput(**{**ALOHA_INPUT.__dict__, "guide": guide}))
        obs = fake.seen[-1]
        assert obs["images"]["cam_high"].shape == (3, 224, 224) and obs["state"].shape == (14,)
        assert obs["prompt"] == "fold" and not any(k.startswith("pi0_ros/") for k in obs)
        assert out.actions.shape == (H, D) and not out.actions[:, 14:].any()
        np.testing.assert_array_equal(out.actions[:5, :14], 0.0)        # frozen: the guide exactly
        np.testing.assert_array_equal(out.actions[5:10, :14], 1.0)      # half way
        np.testing.assert_array_equal(out.actions[10:, :14], 2.0)       # free: the server's chunk
        remote.close()


@pytest.mark.parametrize("reply,match", [
    ({"actions": "nope"}, "garbage"),
    ({"no_actions": 1}, "garbage"),
    ({"actions": np.full((H, 14), np.nan)}, "non-finite"),
    ({"actions": np.zeros((H, 7))}, "expects 14 action dims"),
    ({"actions": np.zeros(14)}, "garbage"),
    (b"\xc1", "garbage"),
    ("Traceback: model exploded", "server error: Traceback: model exploded"),
])
def test_garbage_replies_raise_with_the_reason(reply, match):
    with FakeOpenpiServer(lambda obs: reply) as fake:
        remote = RemotePolicy(fake.uri, "aloha")
        with pytest.raises(RemotePolicyError, match=match):
            remote.infer(ALOHA_INPUT)
        assert not remote.connected
        remote.close()


def test_slow_server_times_out_and_the_next_call_reconnects():
    delays = [1.0, 0.0]
    with FakeOpenpiServer(lambda obs: (time.sleep(delays.pop(0)), {"actions": np.ones((H, 14))})[1]) as fake:
        remote = RemotePolicy(fake.uri, "aloha", request_timeout=0.2, backoff_min=0.05)
        t0 = time.monotonic()
        with pytest.raises(RemotePolicyError, match="no reply .* within 0.2 s"):
            remote.infer(ALOHA_INPUT)
        assert time.monotonic() - t0 < 0.9           # did not wait for the late reply
        time.sleep(1.0)                              # backoff over, the late reply is on a closed socket
        np.testing.assert_array_equal(remote.infer(ALOHA_INPUT).actions[:, :14], 1.0)
        remote.close()


def test_server_down_at_start_fails_fast_with_backoff():
    remote = RemotePolicy("ws://127.0.0.1:9", connect_timeout=1.0, backoff_min=5.0)
    assert remote.warmup() == [] and not remote.connected        # warmup never raises
    t0 = time.monotonic()
    with pytest.raises(RemotePolicyError, match="next attempt in"):
        remote.infer(ALOHA_INPUT)
    assert time.monotonic() - t0 < 0.5


def test_serving_modules_are_ros_free():
    import subprocess
    import sys

    code = ("import sys, pi0_ros.serving.server, pi0_ros.serving.client, pi0_ros.serving.keys, "
            "pi0_ros.serving.process, pi0_ros.bench.serve; assert 'rclpy' not in sys.modules, 'rclpy imported'")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_metadata_tells_clients_the_camera_views_the_checkpoint_was_trained_on(tmp_path):
    """The server does not crop: an openpi client learns from the metadata which region of each
    camera to send (assets/<asset_id>/camera_views.json), and that nothing is recorded for an old
    checkpoint."""
    import shutil

    from pi0_ros import camera_views

    ckpt = tmp_path / "ckpt"
    shutil.copytree(CHECKPOINT, ckpt)
    (asset,) = [d for d in (ckpt / "assets").iterdir() if d.is_dir()]
    for directory, want in ((CHECKPOINT, None), (ckpt, {"base_0_rgb": [0.2, 0.25, 0.5, 0.5]})):
        if want is not None:
            camera_views.save(asset, {"base_0_rgb": (0.2, 0.25, 0.5, 0.5)})
        with PolicyServer(Policy.from_checkpoint(directory), port=0) as s:
            assert WebsocketClientPolicy("127.0.0.1", port=s.port).get_server_metadata()["camera_crops"] == want


def test_remote_policy_refuses_a_server_trained_on_other_camera_views(tmp_path):
    """The robot side: a RemotePolicy for an embodiment that sends whole frames refuses a pi0-ros
    server whose checkpoint was trained on a cropped view (RemotePolicyError, so the policy node
    reports ERROR with the reason); the embodiment with that crop is served."""
    import shutil

    import yaml

    from pi0_ros import camera_views
    from pi0_ros.robots.embodiment import embodiments_dir, load_embodiment

    ckpt = tmp_path / "ckpt"
    shutil.copytree(CHECKPOINT, ckpt)
    (asset,) = [d for d in (ckpt / "assets").iterdir() if d.is_dir()]
    camera_views.save(asset, {"base_0_rgb": (0.2, 0.25, 0.5, 0.5)})
    whole = load_embodiment("trossen_bimanual")
    d = yaml.safe_load((embodiments_dir() / "trossen_bimanual.yaml").read_text())
    d["cameras"]["base_0_rgb"]["crop"] = [0.2, 0.25, 0.5, 0.5]
    spec = tmp_path / "cropped.yaml"
    spec.write_text(yaml.safe_dump(d, sort_keys=False))
    inp = PolicyInput(images={"base_0_rgb": np.zeros((112, 112, 3), np.uint8)}, state=np.zeros(14), prompt="pick")
    with PolicyServer(Policy.from_checkpoint(ckpt), port=0) as s:
        refused = RemotePolicy(f"127.0.0.1:{s.port}", embodiment=whole)
        with pytest.raises(RemotePolicyError, match="base_0_rgb: trained on crop \\[0.2, 0.25, 0.5, 0.5\\], "
                                                     "the embodiment gives the whole frame"):
            refused.infer(inp)
        served = RemotePolicy(f"127.0.0.1:{s.port}", embodiment=load_embodiment(spec))
        assert served.infer(inp).actions.shape[0] == H
        refused.close()
        served.close()
