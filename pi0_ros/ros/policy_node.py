"""Policy node: Observation -> pi0 (in a worker thread) -> ActionChunk stamped with t_obs.

Callbacks only store the newest observation / request; inference runs on a dedicated thread
so subscriptions, status and services never block behind a forward pass.
Trigger modes: "request" (default) infers when the executor asks for the next chunk on
`chunk_request` (the paper's execute-then-reinfer rhythm); "continuous" infers back to back.
While the observation node reports on `observation_status` that inputs are stale or missing
(level not OK), the status is PAUSED with `last_error` "inputs: <its message>", which names
the inputs and their topics; it returns to READY when that report is OK again.
realtime_chunking, noise_scale and num_steps not given to the node come from the checkpoint's
inference.json (pi0_ros.inference_settings), else the declared defaults; the node logs which.
"""
from __future__ import annotations

import inspect
import os
import statistics
import threading
import time
from collections import deque

import numpy as np
from diagnostic_msgs.msg import DiagnosticStatus
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from std_msgs.msg import Header

from pi0_ros import camera_views
from pi0_ros import inference_settings as isettings
from pi0_ros.images import ImageDecodeError
from pi0_ros.msg import ActionChunk, Observation, PolicyStatus
from pi0_ros.realtime_chunking import ChunkGuide, RealTimeChunking
from pi0_ros.robots.embodiment import Embodiment, load_embodiment
from pi0_ros.ros.common import declare, given_parameters, join_thread, log_at, now_sec, run_node
from pi0_ros.ros.conversions import image_to_rgb, stamp_to_sec
from pi0_ros.throttle import KeyedThrottle, reason_key

RELIABLE = QoSProfile(depth=4, reliability=ReliabilityPolicy.RELIABLE)
# As the observation node publishes it: latched, so a late start still sees the current report.
INPUTS_QOS = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
# Taken from the checkpoint's inference.json unless given to the node (pi0_ros.inference_settings).
POLICY_SETTINGS = ("realtime_chunking", "noise_scale", "num_steps")
STATE_NAMES = {v: k for k, v in vars(PolicyStatus).items() if k.isupper() and isinstance(v, int)}


def load_policy(checkpoint: str, asset_id: str, device: str, num_steps: int, seed: int, num_cameras: int,
                noise_scale: float = 1.0):
    """A Policy from a checkpoint directory, or the tiny preset with random weights when empty."""
    from pi0_ros.policy import Policy

    if checkpoint:
        return Policy.from_checkpoint(checkpoint, asset_id=asset_id or None, device=device, num_steps=num_steps,
                                      noise_scale=noise_scale)
    policy = Policy.tiny_random(seed=seed, device=device, num_cameras=num_cameras, num_steps=num_steps)
    policy.noise_scale = noise_scale
    return policy


def load_backend(p: dict, asset_id: str, embodiment: Embodiment):
    """The node's policy from its parameters: a local Policy, or (backend "remote") a RemotePolicy
    client of an openpi-protocol server with the same interface."""
    if p["backend"] == "remote":
        from pi0_ros.serving.client import RemotePolicy

        return RemotePolicy(p["server_uri"], p["remote_keys"], api_key=p["api_key"],
                            connect_timeout=p["connect_timeout"], request_timeout=p["request_timeout"],
                            jpeg_quality=p["jpeg_quality"], embodiment=embodiment)
    return load_policy(p["checkpoint"], asset_id, p["device"], p["num_steps"], p["seed"], 3, p["noise_scale"])


class PolicyNode(Node):
    def __init__(self, policy=None, **kwargs) -> None:
        super().__init__("pi0_policy", **kwargs)
        p = declare(self, {
            "embodiment": "trossen_bimanual",
            "checkpoint": "",              # checkpoint directory; "" = tiny preset, RANDOM weights
            "asset_id": "",                # norm stats asset; "" = the embodiment's asset_id / the only one
            "device": "cpu",               # cpu | cuda | cuda:N
            # realtime_chunking, num_steps, noise_scale: when not given, the checkpoint's
            # inference.json decides, else these defaults (POLICY_SETTINGS).
            "num_steps": 10,               # flow-matching Euler steps
            "noise_scale": 1.0,            # std of the sampler's starting noise (1 = N(0, I); 0 = deterministic)
            "trigger": "request",          # request | continuous
            "max_observation_age": 0.5,    # s; older observations are never used
            "warmup_runs": 2,
            "seed": 0,
            "torch_threads": 0,            # 0: auto (half the cores, >= 1); -1: torch default (one per core)
            "status_period": 0.5,          # s
            "log_period": 5.0,             # s, at most one log line per reason in this time
            # Each chunk continues the overlapping rest of the previous one (inpainting,
            # pi0_ros.realtime_chunking); the actions that run during inference are kept.
            "realtime_chunking": False,
            # backend "remote": infer on an openpi-protocol server (pi0-ros serve or openpi's);
            # a server that is down, slow or answers garbage -> ERROR, nothing published, retried.
            "backend": "local",            # local | remote
            "server_uri": "ws://127.0.0.1:8000",
            "remote_keys": "",             # key set (config/serving): "" = pi0_ros for pi0-ros serve; aloha | droid | libero
            "api_key": "",                 # "" = $PI0_ROS_API_KEY if set
            "connect_timeout": 5.0,        # s
            "request_timeout": 2.0,        # s; a later reply is dropped and the connection re-opened
            "jpeg_quality": 0,             # > 0: images as JPEG (pi0-ros serve only); 0: raw uint8
        })
        if p["trigger"] not in ("request", "continuous"):
            raise ValueError(f"trigger must be 'request' or 'continuous', got '{p['trigger']}'")
        if p["backend"] not in ("local", "remote"):
            raise ValueError(f"backend must be 'local' or 'remote', got '{p['backend']}'")
        remote = p["backend"] == "remote"
        self.embodiment = emb = load_embodiment(p["embodiment"])
        if p["checkpoint"] and not remote and policy is None:
            # Before the (slow) model load: a checkpoint trained on other camera views than this
            # embodiment's crops would run on images it never saw.
            asset = p["asset_id"] or emb.asset_id
            camera_views.check(camera_views.load_for(p["checkpoint"], asset), emb,
                               f"checkpoint {p['checkpoint']} (asset {asset})")
        self.inference = self._inference_settings(p, remote, policy)
        threads = isettings.inference_threads(p["torch_threads"], os.cpu_count())  # why: see there
        if threads is not None and not remote:
            import torch

            torch.set_num_threads(threads)
            self.get_logger().info(f"inference on {threads} torch thread(s) (torch_threads {p['torch_threads']})")
        self.params = p
        self.status_msg = PolicyStatus(embodiment=emb.name,
                                       checkpoint=p["server_uri"] if remote else p["checkpoint"] or "tiny-random",
                                       random_weights=bool(getattr(policy, "random_weights", False)) if policy is not None
                                       else not (p["checkpoint"] or remote))
        # The worker and the callbacks both change the state: transitions are atomic under this lock.
        self._state_lock = threading.RLock()
        self._inputs_problem = ""         # why the observation node publishes nothing ("" = inputs ok)
        self._paused_by_inputs = False
        self._throttle = KeyedThrottle(p["log_period"])  # per reason: a rare error is never hidden
        self._set_state(PolicyStatus.LOADING)
        self.chunk_pub = self.create_publisher(ActionChunk, "action_chunk", RELIABLE)
        self.status_pub = self.create_publisher(PolicyStatus, "~/status", RELIABLE)
        self.create_subscription(Observation, "observation", self._on_observation, QoSProfile(depth=2))
        self.create_subscription(Header, "chunk_request", self._on_request, RELIABLE)
        self.create_subscription(DiagnosticStatus, "observation_status", self._on_observation_status, INPUTS_QOS)
        self.create_timer(p["status_period"], self._publish_status)
        self._cv = threading.Condition()
        self._obs: Observation | None = None
        self._requested = p["trigger"] == "continuous"
        self._stop = False
        self.sequence = 0
        self.model_ms: deque[float] = deque(maxlen=200)
        self.latency_ms: deque[float] = deque(maxlen=200)
        self.overhead_ms: deque[float] = deque(maxlen=200)  # ms in this node besides the model
        self.wait_ms: deque[float] = deque(maxlen=200)      # ms from t_obs to the start of inference
        self.policy = policy
        self.rtc = RealTimeChunking(emb.dt) if p["realtime_chunking"] else None
        self._rtc_reset = False
        if self.status_msg.random_weights:
            self.get_logger().warning("!!! No checkpoint given: the tiny pi0 preset with RANDOM weights. Its actions are "
                                   "meaningless - use dry_run or the simulator, never real hardware. !!!")
        self._thread = threading.Thread(target=self._worker, name="pi0_inference", daemon=True)
        self._thread.start()

    def _inference_settings(self, p: dict, remote: bool, policy) -> dict[str, isettings.Setting]:
        """realtime_chunking, noise_scale, num_steps: a parameter given to this node wins over the
        checkpoint's inference.json, which wins over the declared default; `p` gets the result."""
        given = given_parameters(self, POLICY_SETTINGS)
        ckpt = isettings.load(p["checkpoint"])
        # Not given, p holds the declared default: that is the code default.
        out = isettings.resolve(POLICY_SETTINGS, {k: p[k] for k in given}, ckpt, {k: p[k] for k in POLICY_SETTINGS})
        p.update({k: s.value for k, s in out.items()})
        # `ros2 param get` shows what runs, not the declared default.
        self.set_parameters([Parameter(k, value=s.value) for k, s in out.items() if k not in given])
        shown = dict(out)
        note = ""
        if remote or policy is not None:  # the sampler is not this node's: only realtime_chunking applies here
            shown = {"realtime_chunking": out["realtime_chunking"]}
            note = "; noise_scale, num_steps: " + ("the server's" if remote else "the given policy's")
        log = self.get_logger()
        log.info(f"inference settings: {isettings.describe(shown)}{note}")
        validation = ckpt.validation(p["embodiment"]) if ckpt else ""
        if validation:
            log.info(f"{ckpt.path}: validated: {validation}")
        mismatch = isettings.embodiment_mismatch(ckpt, p["embodiment"])
        if mismatch:
            log.warning(mismatch)
        return out

    # ------------------------------------------------------------------ callbacks (never block)
    def _on_observation(self, msg: Observation) -> None:
        with self._cv:
            self._obs = msg
            self._cv.notify()

    def _on_request(self, msg: Header) -> None:
        with self._cv:
            self._requested = True
            self._cv.notify()

    def _on_observation_status(self, msg: DiagnosticStatus) -> None:
        """Pause while the observation node says its inputs are stale or missing; resume after."""
        problem = "" if msg.level == DiagnosticStatus.OK else (msg.message or "observation inputs not ok")
        with self._state_lock:
            changed = problem != self._inputs_problem
            self._inputs_problem = problem
            state = self.status_msg.state
            if problem and state in (PolicyStatus.READY, PolicyStatus.PAUSED):
                self._pause_for_inputs()
            elif not problem and self._paused_by_inputs and state == PolicyStatus.PAUSED:
                self._set_state(PolicyStatus.READY, "")
        if changed and problem:
            self._log("warning", f"paused: inputs: {problem}", key="inputs: " + reason_key(problem))
        elif changed:
            self._log("info", "inputs ok again: waiting for a fresh observation", key="inputs ok")

    def _pause_for_inputs(self) -> None:
        with self._state_lock:
            self._set_state(PolicyStatus.PAUSED, f"inputs: {self._inputs_problem}")
            self._paused_by_inputs = True

    def _idle(self, error: str | None = None) -> None:
        """Done with an observation: READY for the next one, or PAUSED while inputs are bad."""
        with self._state_lock:
            if self._inputs_problem:
                self._pause_for_inputs()
            else:
                self._set_state(PolicyStatus.READY, error)

    def _log(self, level: str, text: str, key: str | None = None) -> None:
        """Log `text` at most once per log_period for its reason (key; default: text without numbers)."""
        suppressed = self._throttle(key if key is not None else reason_key(text), time.monotonic())
        if suppressed is not None:
            more = f" ({suppressed} more since the last report)" if suppressed else ""
            log_at(self.get_logger(), level, text + more)

    def reset_chunking(self) -> None:
        """New episode: the next chunk does not continue the previous one (thread-safe)."""
        if self.rtc is not None:
            with self._cv:
                self._rtc_reset = True

    def _chunk_guide(self, obs: Observation, stamp: float) -> ChunkGuide | None:
        """Real-time chunking guide for this observation (worker thread), or None."""
        if self.rtc is None:
            return None
        with self._cv:
            reset, self._rtc_reset = self._rtc_reset, False
        if reset:
            self.rtc.reset()
        # Actions for the time this chunk takes to reach the executor are frozen.
        delay = statistics.median(self.latency_ms) / 1e3 if self.latency_ms else 0.0
        return self.rtc.guide(stamp, delay, prompt=obs.prompt)

    # ------------------------------------------------------------------ worker
    def _set_state(self, state: int, error: str | None = None) -> None:
        with self._state_lock:
            self._paused_by_inputs = False  # _pause_for_inputs sets it again
            self.status_msg.state = state
            self.status_msg.state_name = STATE_NAMES.get(state, str(state))
            if error is not None:
                self.status_msg.last_error = error

    def _worker(self) -> None:
        p = self.params
        try:
            if self.policy is None:
                self.policy = load_backend(p, p["asset_id"] or self.embodiment.asset_id, self.embodiment)
            if self._stopping():
                return
            self._set_state(PolicyStatus.WARMING_UP)
            self._warmup(max(0, p["warmup_runs"]))
            if self._stopping():
                return
            self.status_msg.random_weights = bool(getattr(self.policy, "random_weights", self.status_msg.random_weights))
        except Exception as e:  # noqa: BLE001 - report any load failure on the status topic
            self._set_state(PolicyStatus.ERROR, f"loading policy failed: {e}")
            self.get_logger().error(self.status_msg.last_error)
            return
        if self.policy.action_dim < self.embodiment.min_action_dim:
            self._set_state(PolicyStatus.ERROR, f"{self.embodiment.name} needs a model action_dim >= "
                            f"{self.embodiment.min_action_dim}, the policy has {self.policy.action_dim}")
            self.get_logger().error(self.status_msg.last_error)
            return
        self._idle()
        self.get_logger().info(f"policy ready: {self.policy!r}")
        last_used = -1
        while True:
            with self._cv:
                while not self._stop and not (self._requested and self._obs is not None and self._obs.sequence != last_used):
                    self._cv.wait(timeout=0.1)
                if self._stop:
                    return
                obs = self._obs
            age = now_sec(self) - stamp_to_sec(obs.header.stamp)
            if age > p["max_observation_age"]:
                # Never infer on old data: wait for a fresh observation (the request stays open).
                self.status_msg.observations_rejected += 1
                self._set_state(PolicyStatus.PAUSED, f"observation {obs.sequence} too old ({age:.3f} s > "
                                f"{p['max_observation_age']} s)")
                last_used = obs.sequence
                continue
            last_used = obs.sequence
            with self._cv:
                self._requested = p["trigger"] == "continuous"
            try:
                self._infer_and_publish(obs)
            except Exception as e:  # noqa: BLE001 - a bad message must never kill the worker
                self.status_msg.observations_rejected += 1
                error = f"observation {obs.sequence} rejected: {type(e).__name__}: {e}"
                self._idle(error)
                self._log("error", error)

    def _stopping(self) -> bool:
        with self._cv:
            return self._stop

    def _warmup(self, n: int) -> None:
        """Warm the policy up, stopping between two forward passes once the node is destroyed (a
        policy whose warmup takes `should_stop`, as Policy's; others warm up in one call)."""
        warmup = self.policy.warmup
        try:
            stoppable = "should_stop" in inspect.signature(warmup).parameters
        except (TypeError, ValueError):  # no signature to read (a builtin, a mock)
            stoppable = False
        if stoppable:
            warmup(n, should_stop=self._stopping)
        else:
            warmup(n)

    def _infer_and_publish(self, obs: Observation) -> None:
        from pi0_ros.policy import PolicyInput

        emb, t0 = self.embodiment, time.perf_counter()
        wait_ms = (now_sec(self) - stamp_to_sec(obs.header.stamp)) * 1e3  # observation age at start
        try:
            if obs.embodiment != emb.name or list(obs.state_names) != emb.dim_names:
                raise ValueError(f"observation is for '{obs.embodiment}' with dims {list(obs.state_names)[:3]}..., "
                                 f"expected {emb.name}")
            if len(obs.state) != emb.num_dims or not (len(obs.camera_slots) == len(obs.images) == len(obs.image_valid)):
                raise ValueError(f"observation has {len(obs.state)} state values for {emb.num_dims} dims, "
                                 f"{len(obs.camera_slots)} slots / {len(obs.images)} images / {len(obs.image_valid)} flags")
            images = {slot: image_to_rgb(img) for slot, img, ok in zip(obs.camera_slots, obs.images, obs.image_valid) if ok}
            state = emb.padded_state(np.asarray(obs.state, dtype=np.float64), self.policy.action_dim)
        except (ValueError, ImageDecodeError) as e:
            self.status_msg.observations_rejected += 1
            error = f"observation {obs.sequence} rejected: {e}"
            self._idle(error)
            self._log("warning", error)
            return
        self._set_state(PolicyStatus.INFERRING)
        stamp = stamp_to_sec(obs.header.stamp)
        try:
            out = self.policy.infer(PolicyInput(images=images, state=state, prompt=obs.prompt, stamp=stamp,
                                                 guide=self._chunk_guide(obs, stamp)))
        except Exception as e:  # noqa: BLE001 - keep serving; report on status
            error = f"inference failed: {e}"
            self._set_state(PolicyStatus.ERROR, error)
            self._log("error", error)
            return
        actions = emb.robot_actions(out.actions)  # (H, n) robot units
        msg = ActionChunk()
        msg.header.stamp = obs.header.stamp   # t_obs: action i is for t_obs + i*dt
        msg.header.frame_id = obs.header.frame_id
        msg.embodiment = emb.name
        msg.sequence = self.sequence
        msg.observation_sequence = obs.sequence
        msg.joint_names = emb.dim_names
        msg.dt = emb.dt
        msg.chunk_size, msg.action_dim = actions.shape
        msg.actions = actions.ravel().tolist()
        msg.prompt = obs.prompt
        model_ms = out.timing.get("model", out.timing.get("total", 0.0))
        msg.inference_ms = float(model_ms)
        latency = (now_sec(self) - stamp_to_sec(obs.header.stamp)) * 1e3
        msg.latency_ms = float(latency)
        self.chunk_pub.publish(msg)
        if self.rtc is not None:
            self.rtc.remember(stamp, out.actions, prompt=obs.prompt)
        self.sequence += 1
        self.model_ms.append(model_ms)
        self.latency_ms.append(latency)
        self.overhead_ms.append((time.perf_counter() - t0) * 1e3 - model_ms)
        self.wait_ms.append(wait_ms)
        s = self.status_msg
        s.chunks_produced = self.sequence
        s.inference_ms = float(model_ms)
        s.inference_ms_median = float(statistics.median(self.model_ms))
        s.latency_ms = float(latency)
        s.prompt = obs.prompt
        self._idle()

    def _publish_status(self) -> None:
        with self._state_lock:  # state, state_name and last_error published together
            self.status_msg.header.stamp = self.get_clock().now().to_msg()
            self.status_pub.publish(self.status_msg)

    def destroy_node(self) -> None:
        with self._cv:
            self._stop = True
            self._cv.notify_all()
        # Until it has ended, however long its current step (model load, warm-up or inference
        # forward pass) takes: see join_thread.
        join_thread(self._thread, self.get_logger(), "the policy's inference thread to finish its current "
                    "step (model load, warm-up or inference forward pass)")
        if hasattr(self.policy, "close"):   # a RemotePolicy's connection
            self.policy.close()
        super().destroy_node()


def main(args: list[str] | None = None) -> None:
    run_node(PolicyNode, args)
