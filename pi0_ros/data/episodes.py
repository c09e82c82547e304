"""Episode planning of bag2dataset: one read bag -> resampled episodes (no pixels yet).

Cuts a bag into episodes (markers, prompt changes, gaps), puts every frame on the t0 + k/fps
clock (state interpolated, nearest camera frame) and labels the actions.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pi0_ros.data.bag_read import BagContent, ConversionError
from pi0_ros.data.topics import COMMANDED_TOPIC, PROMPT_TOPIC
from pi0_ros.robots.embodiment import Embodiment

logger = logging.getLogger(__name__)

ACTION_SOURCES = ("auto", "commands", "next_state")


@dataclass
class EpisodePlan:
    bag: Path
    prompt: str
    success: bool | None
    action_source: str
    frame_times: np.ndarray                          # (F,) ns
    state: np.ndarray                                # (F, n) robot units
    action: np.ndarray                               # (F, n) robot units
    camera_frames: dict[str, np.ndarray]             # slot -> (F,) ordinal of the camera message
    note: str = ""


def _prompt_segments(bag: BagContent, a: int, b: int, first: str | None) -> list[tuple[int, int, str | None]]:
    """Split [a, b] where the /prompt text changes: [(start, stop, prompt in effect)].

    The first piece is labelled ``first`` when given (episode.json), else by the last /prompt
    at or before ``a``, else by the first /prompt inside the window.
    """
    prompts = sorted(bag.prompts, key=lambda x: x[0])
    before = [p for t, p in prompts if t <= a]
    inside = [(t, p) for t, p in prompts if a < t < b]
    current = first or (before[-1] if before else inside[0][1] if inside else None)
    segs: list[tuple[int, int, str | None]] = []
    start = a
    for t, p in inside:
        if p != current:
            segs.append((start, t, current))
            start, current = t, p
    segs.append((start, b, current))
    return segs


def _episode_windows(bag: BagContent, default_prompt: str | None) -> list[tuple[int, int, str, bool | None, bool]]:
    """[(start_ns, stop_ns, prompt, success, split_by_prompt)] of one bag.

    Episodes: /pi0_episode marker pairs, else the whole bag; either is cut where the /prompt
    text changes (unless the marker names its prompt). Prompts: the marker's, else
    episode.json's (first piece), else the /prompt in effect. An explicit ``default_prompt``
    (--prompt) labels every episode and wins over the bag's own prompts, with a warning.
    """
    wins = []
    open_: tuple[int, dict] | None = None
    for t, m in sorted(bag.markers, key=lambda x: x[0]):
        if m.get("event") == "start":
            if open_ is not None:
                wins.append((open_[0], t, open_[1].get("prompt"), None))
            open_ = (t, m)
        elif m.get("event") == "stop" and open_ is not None:
            wins.append((open_[0], t, open_[1].get("prompt"), m.get("success")))
            open_ = None
    if open_ is not None:
        wins.append((open_[0], bag.end_ns, open_[1].get("prompt"), None))
    ej = bag.episode_json or {}
    if not wins:
        wins = [(bag.start_ns, bag.end_ns, None, ej.get("success"))]
    out = []
    for a, b, prompt, success in wins:
        segs = [(a, b, prompt)] if prompt else _prompt_segments(bag, a, b, ej.get("prompt"))
        if len(segs) > 1:
            logger.warning("%s: the %s prompt changes %d time(s) inside one episode: starting a new episode at each change",
                           bag.path, PROMPT_TOPIC, len(segs) - 1)
        for k, (s0, s1, p) in enumerate(segs):
            if default_prompt:
                if p and p != default_prompt:
                    logger.warning("%s: --prompt %r overrides the bag's prompt %r (%.2f-%.2f s)", bag.path,
                                   default_prompt, p, (s0 - bag.start_ns) * 1e-9, (s1 - bag.start_ns) * 1e-9)
                p = default_prompt
            if not p:
                raise ConversionError(f"{bag.path}: no prompt for the episode at {s0 * 1e-9:.3f} s (no markers, episode.json "
                                      f"or {PROMPT_TOPIC} messages): pass --prompt")
            out.append((s0, s1, p, success if k == len(segs) - 1 else None, len(segs) > 1))
    return out


def _gaps(t: np.ndarray, max_gap_ns: int) -> list[tuple[int, int]]:
    d = np.diff(t)
    idx = np.flatnonzero(d > max_gap_ns)
    return [(int(t[i]), int(t[i + 1])) for i in idx]


def plan_episodes(bag: BagContent, emb: Embodiment, fps: float, actions: str = "auto", max_gap: float = 0.5,
                  image_tolerance: float | None = None, on_gap: str = "split", min_frames: int = 2,
                  default_prompt: str | None = None) -> list[EpisodePlan]:
    """Turn one read bag into resampled episodes (no pixels yet)."""
    if actions not in ACTION_SOURCES:
        raise ValueError(f"actions must be one of {ACTION_SOURCES}, got {actions!r}")
    max_gap_ns = int(max_gap * 1e9)
    tol_ns = int((image_tolerance if image_tolerance is not None else max_gap / 2) * 1e9)
    period_ns = 1e9 / fps
    plans: list[EpisodePlan] = []
    for ei, (a, b, prompt, success, split) in enumerate(_episode_windows(bag, default_prompt)):
        where = f"{bag.path}: episode {ei} ({(a - bag.start_ns) * 1e-9:.2f}-{(b - bag.start_ns) * 1e-9:.2f} s into the bag)"
        series: dict[str, tuple[str, np.ndarray, np.ndarray]] = {}
        for d in emb.dims:
            t, v = bag.state[d.name].arrays(a, b)
            series[f"state:{d.name}"] = (bag.state[d.name].topic, t, v)
        cams = {}
        for c in emb.cameras:
            ct = bag.cameras[c.slot]
            order = np.arange(ct.size)
            keep = (ct >= a) & (ct <= b)
            cams[c.slot] = (c.topic, ct[keep], order[keep])
        # Dims of action outputs (gripper actions) have no command topic: labelled from the
        # executor's commanded targets when recorded (COMMANDED_TOPIC), else from the next state.
        topic_dims = [dn for o in emb.outputs if not o.is_action for dn in o.dims]
        have_cmds = bool(topic_dims) and all(dn in bag.commands and bag.commands[dn].arrays(a, b)[0].size
                                             for dn in topic_dims)
        source = actions
        if actions == "auto":
            source = "commands" if have_cmds else "next_state"
        elif actions == "commands" and not have_cmds:
            missing = sorted({o.topic for o in emb.outputs for dn in o.dims if not o.is_action and
                              (dn not in bag.commands or not bag.commands[dn].arrays(a, b)[0].size)})
            raise ConversionError(f"{where}: --actions commands but no commands on {', '.join(missing)}")
        cmd = {}
        if source == "commands":
            for dn in topic_dims:
                t, v = bag.commands[dn].arrays(a, b)
                cmd[dn] = (bag.commands[dn].topic, t, v)
            # Action outputs (e.g. GripperCommand): what the executor commanded, if recorded. The
            # next measured state would teach a gripper to aim at where it stalled on the object
            # (half open), i.e. to hold it with no force.
            for dn, series_ in bag.commanded.items():
                t, v = series_.arrays(a, b)
                if t.size:
                    cmd[dn] = (COMMANDED_TOPIC, t, v)

        timed = [(k, tp, t) for k, (tp, t, _) in series.items()] + [(f"camera:{s}", tp, t) for s, (tp, t, _) in cams.items()]
        timed += [(f"command:{dn}", tp, t) for dn, (tp, t, _) in cmd.items()]
        for key, topic, t in timed:
            if t.size == 0:
                raise ConversionError(f"{where}: empty episode: no messages on {topic} ({key})")
        t0 = max(int(t[0]) for _, _, t in timed)
        t1 = min(int(t[-1]) for _, _, t in timed)
        if t1 - t0 < (min_frames - 1) * period_ns:
            if split:
                logger.warning("%s: dropping a %.3f s piece between prompt changes (< %d frames)", where,
                               max(0, t1 - t0) * 1e-9, min_frames)
                continue
            raise ConversionError(f"{where}: empty episode: the topics overlap for only {max(0, t1 - t0) * 1e-9:.3f} s "
                                  f"(< {min_frames} frames at {fps:g} fps)")
        gaps = set()  # one per topic and gap, not one per joint of the topic
        for key, topic, t in timed:
            for g0, g1 in _gaps(t, max_gap_ns):
                if g1 > t0 and g0 < t1:
                    gaps.add((g0, g1, topic))
        gaps = sorted(gaps)
        if gaps and on_gap == "reject":
            g0, g1, topic = gaps[0]
            raise ConversionError(f"{where}: time gap of {(g1 - g0) * 1e-9:.2f} s on {topic} at "
                                  f"{(g0 - bag.start_ns) * 1e-9:.2f} s (> --max-gap {max_gap} s); --on-gap split keeps the pieces")
        pieces = [(t0, t1)]
        for g0, g1, topic in sorted(gaps):
            logger.warning("%s: time gap of %.2f s on %s at %.2f s: splitting the episode there",
                           where, (g1 - g0) * 1e-9, topic, (g0 - bag.start_ns) * 1e-9)
            nxt = []
            for p0, p1 in pieces:
                if g1 <= p0 or g0 >= p1:
                    nxt.append((p0, p1))
                    continue
                if g0 > p0:
                    nxt.append((p0, g0))
                if g1 < p1:
                    nxt.append((g1, p1))
            pieces = nxt
        for pi, (p0, p1) in enumerate(pieces):
            nf = int(math.floor((p1 - p0) / period_ns + 1e-9)) + 1
            if nf < min_frames:
                logger.warning("%s: dropping a %d-frame piece (< --min-frames %d)", where, nf, min_frames)
                continue
            ft = p0 + np.round(np.arange(nf) * period_ns).astype(np.int64)
            st = np.stack([np.interp(ft, series[f"state:{d.name}"][1], series[f"state:{d.name}"][2]) for d in emb.dims], axis=1)
            frames = {}
            for slot, (topic, t, ords) in cams.items():
                j = np.clip(np.searchsorted(t, ft), 1, t.size - 1) if t.size > 1 else np.zeros(nf, dtype=np.int64)
                if t.size > 1:
                    j = np.where(np.abs(t[j - 1] - ft) <= np.abs(t[j] - ft), j - 1, j)
                err = np.abs(t[j] - ft)
                if err.max() > tol_ns:
                    k = int(err.argmax())
                    raise ConversionError(f"{where}: no {topic} frame within {tol_ns * 1e-9:.3f} s of frame {k} "
                                          f"(nearest {err[k] * 1e-9:.3f} s away)")
                frames[slot] = ords[j]
            next_state = np.concatenate([st[1:], st[-1:]], axis=0)
            if source == "commands":
                cols = []
                for i, dn in enumerate(emb.dim_names):
                    if dn not in cmd:  # an action output's dim, its commanded targets not recorded
                        cols.append(next_state[:, i])
                        continue
                    _, t, v = cmd[dn]
                    j = np.searchsorted(t, ft, side="right") - 1
                    cols.append(v[np.maximum(j, 0)])
                act = np.stack(cols, axis=1)
            else:
                act = next_state
            note = f" (piece {pi + 1}/{len(pieces)} of a split episode)" if len(pieces) > 1 else ""
            plans.append(EpisodePlan(bag.path, prompt, success, source, ft, st, act, frames, note))
    return plans
