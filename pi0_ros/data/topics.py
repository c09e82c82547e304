"""Which topics an embodiment needs recorded, derived from its YAML (ROS-free).

Recorded: every camera (Image or CompressedImage), every joint-state source, the odometry
(mobile robots), every command output (the action labels of teleoperation), the executor's
commanded targets where an output is an action (its labels: COMMANDED_TOPIC), the prompt,
the policy's action chunks (to study policy roll-outs) and the episode events.
NOT recorded: /observation (an Observation re-packs the cameras at 224x224: redundant and big).
"""
from __future__ import annotations

from typing import NamedTuple

from pi0_ros.robots.embodiment import Embodiment, load_embodiment

PROMPT_TOPIC = "/prompt"
ACTION_CHUNK_TOPIC = "/action_chunk"
# Episode events, std_msgs/String with a JSON payload, e.g.
#   {"event": "start", "prompt": "pick up the red cube", "episode_index": 3}
#   {"event": "stop", "success": true, "episode_index": 3}
# The recorder publishes them (and accepts them as commands); bag2dataset splits on them.
EPISODE_TOPIC = "/pi0_episode"
# The executor's commanded targets (sensor_msgs/JointState, names = the embodiment's dim names,
# robot units, after the safety layer): the action labels of dims whose output is an action
# (GripperCommand goals are not topics a bag can record).
COMMANDED_TOPIC = "/pi0_executor/commanded"

IMAGE = "sensor_msgs/msg/Image"
COMPRESSED_IMAGE = "sensor_msgs/msg/CompressedImage"
JOINT_STATE = "sensor_msgs/msg/JointState"
ODOMETRY = "nav_msgs/msg/Odometry"
STRING = "std_msgs/msg/String"
ACTION_CHUNK = "pi0_ros/msg/ActionChunk"

# Roles, so consumers need not re-derive what a topic is for.
SENSOR_ROLES = ("camera", "joint_state", "odometry")


class RecordTopic(NamedTuple):
    topic: str
    msgtype: str   # ROS 2 type name, e.g. "sensor_msgs/msg/Image"
    role: str      # camera | joint_state | odometry | command | commanded | prompt | action_chunk | episode


def record_topic_specs(embodiment: Embodiment | str, *, include_action_chunks: bool = True,
                       include_prompt: bool = True, include_episode_events: bool = True) -> list[RecordTopic]:
    """The topics to record for ``embodiment``, sensors first, each topic once."""
    emb = load_embodiment(embodiment) if isinstance(embodiment, str) else embodiment
    out: list[RecordTopic] = []
    for cam in emb.cameras:
        out.append(RecordTopic(cam.topic, COMPRESSED_IMAGE if cam.compressed else IMAGE, "camera"))
    for topic in emb.joint_state_sources.values():
        out.append(RecordTopic(topic, JOINT_STATE, "joint_state"))
    if emb.odometry_topic:
        out.append(RecordTopic(emb.odometry_topic, ODOMETRY, "odometry"))
    for o in emb.outputs:
        if o.is_action:  # an action name, not a topic: bag2dataset labels its dims from the next state
            continue
        out.append(RecordTopic(o.topic, o.type, "command"))
    if any(o.is_action for o in emb.outputs):
        out.append(RecordTopic(COMMANDED_TOPIC, JOINT_STATE, "commanded"))
    if include_prompt:
        out.append(RecordTopic(PROMPT_TOPIC, STRING, "prompt"))
    if include_action_chunks:
        out.append(RecordTopic(ACTION_CHUNK_TOPIC, ACTION_CHUNK, "action_chunk"))
    if include_episode_events:
        out.append(RecordTopic(EPISODE_TOPIC, STRING, "episode"))
    seen: dict[str, RecordTopic] = {}
    for t in out:
        if t.topic in seen:
            if seen[t.topic].msgtype != t.msgtype:
                raise ValueError(f"{emb.name}: topic {t.topic} used as {seen[t.topic].msgtype} and {t.msgtype}")
            continue
        seen[t.topic] = t
    return list(seen.values())


def record_topics(embodiment: Embodiment | str, **kw: bool) -> list[tuple[str, str]]:
    """[(topic, message type name)] to record for ``embodiment`` (see record_topic_specs)."""
    return [(t.topic, t.msgtype) for t in record_topic_specs(embodiment, **kw)]
