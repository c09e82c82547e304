"""Synthetic rosbag2 episodes for any embodiment (tests, demos, converter benchmarks). ROS-free.

The robot follows smooth sinusoids per dim; the command topics carry the targets LEAD
seconds ahead of the measured state (as a teleoperation leader does); cameras show a
gradient with a square whose position follows the first two dims, so images and state agree.
"""
from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from pi0_ros.data import bagio
from pi0_ros.data.record import EPISODE_JSON, marker_payload
from pi0_ros.data.topics import EPISODE_TOPIC, PROMPT_TOPIC, STRING
from pi0_ros.images import encode_compressed
from pi0_ros.robots.embodiment import BASE_KINDS, Embodiment, load_embodiment

T0_NS = 1_700_000_000 * 1_000_000_000  # a wall-clock-like start time
LEAD = 0.05                             # s: commands lead the measured state by this much
LATENCY_NS = 1_000_000                  # bag receive time = header stamp + 1 ms


def robot_state(emb: Embodiment, t: np.ndarray, seed: int = 0) -> np.ndarray:
    """(len(t), n) robot-unit trajectory inside each dim's limits; t in seconds."""
    rng = np.random.default_rng(seed)
    t = np.asarray(t, dtype=np.float64)[:, None]
    f = rng.uniform(0.2, 0.6, emb.num_dims)
    ph = rng.uniform(0, 2 * np.pi, emb.num_dims)
    u = 0.5 + 0.4 * np.sin(2 * np.pi * f * t + ph)          # in (0.1, 0.9)
    out = np.empty_like(u)
    for i, d in enumerate(emb.dims):
        if d.kind == "gripper":
            out[:, i] = d.open + u[:, i] * (d.closed - d.open)
        else:
            lo, hi = max(d.lower, -1.0), min(d.upper, 1.0)
            out[:, i] = lo + u[:, i] * (hi - lo)
    return out


def synthetic_image(state: np.ndarray, h: int = 48, w: int = 64) -> np.ndarray:
    """RGB uint8 (h, w, 3): a gradient plus a white square placed by state[0], state[1]."""
    img = np.zeros((h, w, 3), dtype=np.uint8)
    img[..., 0] = np.linspace(0, 255, w, dtype=np.uint8)[None, :]
    img[..., 2] = np.linspace(0, 255, h, dtype=np.uint8)[:, None]
    cx = int((np.tanh(state[0]) * 0.5 + 0.5) * (w - 8))
    cy = int((np.tanh(state[1] if state.size > 1 else 0.0) * 0.5 + 0.5) * (h - 8))
    img[cy:cy + 8, cx:cx + 8] = 255
    return img


def write_synthetic_bag(path: str | Path, embodiment: str | Embodiment, *, duration: float = 3.0,
                        storage: str = "mcap", joint_rate: float = 100.0, camera_rate: float = 10.0,
                        command_rate: float | None = 50.0, prompt: str = "pick up the red cube",
                        success: bool | None = True, seed: int = 0, skip_topics: Iterable[str] = (),
                        gaps: Iterable[tuple[float, float]] = (), episode_json: bool = True, markers: bool = False,
                        image_size: tuple[int, int] = (48, 64), t0_ns: int = T0_NS,
                        raw_encoding: str = "rgb8", prompt_changes: Iterable[tuple[float, str]] = ()) -> Path:
    """Write one episode bag. ``gaps``: (start s, end s) windows in which NO sensor or command
    message is written; ``skip_topics``: topics never written; ``command_rate=None``: no commands;
    ``prompt_changes``: (s, text) further /prompt messages."""
    emb = load_embodiment(embodiment) if isinstance(embodiment, str) else embodiment
    path = Path(path)
    store = bagio.typestore()
    T = store.types
    skip = set(skip_topics)
    gaps = list(gaps)

    def in_gap(t: float) -> bool:
        return any(a <= t < b for a, b in gaps)

    def stamp(t_ns: int):
        return T["builtin_interfaces/msg/Time"](sec=t_ns // 1_000_000_000, nanosec=t_ns % 1_000_000_000)

    def header(t_ns: int, frame: str = ""):
        return T["std_msgs/msg/Header"](stamp=stamp(t_ns), frame_id=frame)

    msgs: list[tuple[int, str, str, object]] = []  # (bag time, topic, type, message)
    rng = np.random.default_rng(seed)

    def times(rate: float) -> np.ndarray:
        return np.arange(0.0, duration, 1.0 / rate)

    # Joint states per source (+ odometry).
    tj = times(joint_rate)
    st = robot_state(emb, tj, seed)
    for src, topic in emb.joint_state_sources.items():
        idx = [i for i, d in enumerate(emb.dims) if d.source == src]
        names = [emb.dims[i].joint for i in idx] + ["unused_finger_joint"]
        for k, t in enumerate(tj):
            if in_gap(t) or topic in skip:
                continue
            t_ns = t0_ns + int(round(t * 1e9))
            pos = np.append(st[k, idx], 0.0)
            order = rng.permutation(len(names))  # joint order must not matter
            msg = T["sensor_msgs/msg/JointState"](header=header(t_ns), name=[names[j] for j in order],
                                                  position=pos[order], velocity=np.zeros(0), effort=np.zeros(0))
            msgs.append((t_ns + LATENCY_NS, topic, "sensor_msgs/msg/JointState", msg))
    if emb.odometry_topic and emb.odometry_topic not in skip:
        base = {d.kind: i for i, d in enumerate(emb.dims) if d.kind in BASE_KINDS}
        V3, Tw = T["geometry_msgs/msg/Vector3"], T["geometry_msgs/msg/Twist"]
        for k, t in enumerate(tj):
            if in_gap(t):
                continue
            t_ns = t0_ns + int(round(t * 1e9))
            v = {kind: float(st[k, i]) for kind, i in base.items()}
            tw = Tw(linear=V3(x=v.get("base_vx", 0.0), y=v.get("base_vy", 0.0), z=0.0), angular=V3(x=0.0, y=0.0, z=v.get("base_wz", 0.0)))
            pose = T["geometry_msgs/msg/PoseWithCovariance"](
                pose=T["geometry_msgs/msg/Pose"](position=T["geometry_msgs/msg/Point"](x=0.0, y=0.0, z=0.0),
                                                 orientation=T["geometry_msgs/msg/Quaternion"](x=0.0, y=0.0, z=0.0, w=1.0)),
                covariance=np.zeros(36))
            odom = T["nav_msgs/msg/Odometry"](header=header(t_ns, "odom"), child_frame_id="base_link", pose=pose,
                                              twist=T["geometry_msgs/msg/TwistWithCovariance"](twist=tw, covariance=np.zeros(36)))
            msgs.append((t_ns + LATENCY_NS, emb.odometry_topic, "nav_msgs/msg/Odometry", odom))

    # Cameras.
    tc = times(camera_rate)
    sc = robot_state(emb, tc, seed)
    h, w = image_size
    for ci, cam in enumerate(emb.cameras):
        if cam.topic in skip:
            continue
        for k, t in enumerate(tc):
            if in_gap(t):
                continue
            t_ns = t0_ns + int(round(t * 1e9)) + ci * 1_000_000
            rgb = synthetic_image(sc[k], h, w)
            if cam.compressed:
                typ = "sensor_msgs/msg/CompressedImage"
                msg = T[typ](header=header(t_ns, cam.slot), format="jpeg",
                             data=np.frombuffer(encode_compressed(rgb, "png"), dtype=np.uint8))
            else:
                typ = "sensor_msgs/msg/Image"
                data = rgb[..., ::-1] if raw_encoding == "bgr8" else rgb
                msg = T[typ](header=header(t_ns, cam.slot), height=h, width=w, encoding=raw_encoding, is_bigendian=0,
                             step=w * 3, data=np.ascontiguousarray(data).reshape(-1))
            msgs.append((t_ns + LATENCY_NS, cam.topic, typ, msg))

    # Commands: the targets LEAD s ahead of the measured state.
    if command_rate:
        tcmd = times(command_rate)
        target = robot_state(emb, tcmd + LEAD, seed)
        for o in emb.outputs:
            if o.topic in skip or o.is_action:  # action goals are not recorded topics
                continue
            for k, t in enumerate(tcmd):
                if in_gap(t):
                    continue
                t_ns = t0_ns + int(round(t * 1e9))
                vals = target[k, list(o.indices)]
                if o.type == "std_msgs/msg/Float64MultiArray":
                    layout = T["std_msgs/msg/MultiArrayLayout"](dim=[], data_offset=0)
                    msg = T[o.type](layout=layout, data=vals.astype(np.float64))
                elif o.type == "trajectory_msgs/msg/JointTrajectory":
                    pt = T["trajectory_msgs/msg/JointTrajectoryPoint"](
                        positions=vals.astype(np.float64), velocities=np.zeros(0), accelerations=np.zeros(0),
                        effort=np.zeros(0), time_from_start=T["builtin_interfaces/msg/Duration"](sec=0, nanosec=50_000_000))
                    msg = T[o.type](header=header(0), joint_names=list(o.joint_names), points=[pt])
                elif o.type in ("geometry_msgs/msg/Twist", "geometry_msgs/msg/TwistStamped"):
                    V3 = T["geometry_msgs/msg/Vector3"]
                    v = {emb.dims[i].kind: float(x) for i, x in zip(o.indices, vals)}
                    msg = T["geometry_msgs/msg/Twist"](linear=V3(x=v.get("base_vx", 0.0), y=v.get("base_vy", 0.0), z=0.0),
                                                       angular=V3(x=0.0, y=0.0, z=v.get("base_wz", 0.0)))
                    if o.type.endswith("TwistStamped"):
                        msg = T[o.type](header=header(t_ns), twist=msg)
                else:
                    raise ValueError(f"synthetic bags do not support {o.type}")
                msgs.append((t_ns + LATENCY_NS, o.topic, o.type, msg))

    if PROMPT_TOPIC not in skip:
        msgs.append((t0_ns, PROMPT_TOPIC, STRING, T[STRING](data=prompt)))
        for t, text in prompt_changes:  # (s into the bag, new prompt)
            msgs.append((t0_ns + int(round(t * 1e9)), PROMPT_TOPIC, STRING, T[STRING](data=text)))
    if markers:
        msgs.append((t0_ns, EPISODE_TOPIC, STRING, T[STRING](data=marker_payload("start", 0, prompt=prompt))))
        end = t0_ns + int(duration * 1e9) + 2 * LATENCY_NS
        msgs.append((end, EPISODE_TOPIC, STRING, T[STRING](data=marker_payload("stop", 0, success=success))))

    msgs.sort(key=lambda m: m[0])
    writer = bagio.open_writer(path, storage)  # chunk CRCs, type hashes, ros_distro: as rosbag2 writes
    writer.open()
    conns = {}
    for _, topic, typ, _ in msgs:
        if topic not in conns:
            conns[topic] = writer.add_connection(topic, typ, typestore=store)
    for t_ns, topic, typ, msg in msgs:
        writer.write(conns[topic], t_ns, bytes(store.serialize_cdr(msg, typ)))
    writer.close()
    if episode_json:
        (path / EPISODE_JSON).write_text(json.dumps({"episode_index": 0, "prompt": prompt, "success": success,
                                                     "embodiment": emb.name, "storage": storage}))
    return path
