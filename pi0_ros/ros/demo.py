"""`pi0-ros demo` (`make demo`): the whole pipeline on a simulated robot for about a minute.

Simulator + observation + policy + executor nodes in one process, episodes back to back with
the two language-conditioned prompts, a live status line, and an output folder with a video
and an image strip of the top camera, a plot of commanded vs measured joints and a JSON summary.

`--embodiment` picks the simulated robot (trossen_bimanual = ALOHA, the default; ur5e; franka).
pi0 runs the checkpoint that ships for that robot (ALOHA's own; the multi-robot one on the UR5e
and Franka) or `--checkpoint DIR`;
for a robot without one the demo stops with an error naming the choices rather than run another
robot's weights, or the scripted expert in place of the policy asked for (it picks on ALOHA
only so far). Inference settings not given as options come from the checkpoint's
inference.json (pi0_ros.inference_settings).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from pi0_ros import inference_settings as isettings
from pi0_ros.paths import share_dir

# embodiment -> the trained checkpoint that ships for it (share dir): the one model trained on all three
# robots (tools/make_multirobot_checkpoint.sh, then tools/make_aggregate_checkpoint.sh; its inference.json).
# On ALOHA it measured 49/50 against the ALOHA-only checkpoint's 47/50 (seeds 1000-1049, same quiet
# machine, real time), so the demo runs one checkpoint everywhere; a robot may still name its own here.
DEFAULT_CHECKPOINTS = {"trossen_bimanual": "checkpoints/pi0_sim_multi_pick_cube",
                       "ur5e": "checkpoints/pi0_sim_multi_pick_cube",
                       "franka": "checkpoints/pi0_sim_multi_pick_cube"}
DEMO_EMBODIMENTS = ("trossen_bimanual", "ur5e", "franka")
# The scripted expert (pi0_ros.sim.expert) picks the cube on these. Not yet on ur5e (it misses)
# or franka (its gripper is on its own JointState source: planning fails on the sim thread).
SCRIPTED_EMBODIMENTS = ("trossen_bimanual",)
PROMPTS = ("pick up the red cube", "pick up the blue cube")


def default_checkpoint(embodiment: str = "trossen_bimanual") -> str | None:
    """The shipped checkpoint for `embodiment`; '' when it ships none here (not installed), None
    when no trained checkpoint exists for that robot at all."""
    if embodiment not in DEFAULT_CHECKPOINTS:
        return None
    p = share_dir() / DEFAULT_CHECKPOINTS[embodiment]
    return str(p) if (p / "model.safetensors").is_file() else ""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of wall time to run")
    parser.add_argument("--embodiment", default="trossen_bimanual",
                        help=f"simulated robot: {', '.join(DEMO_EMBODIMENTS)} (default trossen_bimanual, ALOHA)")
    parser.add_argument("--checkpoint", default=None,
                        help="checkpoint directory; '' = the tiny preset with RANDOM weights. Default: the trained "
                             "checkpoint shipped for the embodiment (trossen_bimanual only; if its directory is "
                             "missing, the random-weight preset with a loud warning). ur5e and franka have none "
                             "yet: the demo stops with an error; give --checkpoint DIR or --checkpoint ''")
    parser.add_argument("--policy", choices=["pi0", "scripted"], default="pi0",
                        help="scripted: the simulator's scripted expert (privileged state) through the same nodes "
                             f"({', '.join(SCRIPTED_EMBODIMENTS)} only so far)")
    parser.add_argument("--out", default=None, help="output folder (default outputs/demo-<time>)")
    parser.add_argument("--seed", type=int, default=2000)
    parser.add_argument("--episode-time", type=float, default=8.0, help="s of sim time per episode")
    # Not given: the settings the checkpoint was validated with (its inference.json), else the defaults.
    isettings.add_arguments(parser)
    parser.add_argument("--remote", action="store_true",
                        help="run the checkpoint in `pi0-ros serve` (child process on 127.0.0.1); the policy node is "
                             "its client over the openpi websocket protocol")
    parser.add_argument("--server-uri", default="", help="use this openpi-protocol server instead (implies --remote)")


class Recorder:
    """Taps the running session: top-camera frames and commanded/measured arm joints."""

    def __init__(self, session, fps: float = 10.0) -> None:
        from sensor_msgs.msg import Image
        from rclpy.qos import qos_profile_sensor_data

        from pi0_ros.ros.conversions import image_to_rgb

        self.session, self.frames, self.t, self.cmd, self.meas = session, [], [], [], []
        emb = session.executor_node.embodiment
        topic = next(c.topic for c in emb.cameras if c.slot == "base_0_rgb")
        node = session.sim
        self._last_frame = 0.0
        self._fps = fps

        def on_image(msg: Image) -> None:
            t = time.monotonic()
            if t - self._last_frame >= 1.0 / self._fps:
                self._last_frame = t
                self.frames.append(image_to_rgb(msg))

        self._sub = node.create_subscription(Image, topic, on_image, qos_profile_sensor_data)

    def step(self, session) -> None:
        ex = session.executor_node
        with ex._lock:
            m = ex._measured()
            if ex.last_result is None or ex.last_result.commands is None or m is None:
                return
            self.cmd.append(ex.core.last_values.copy())
        self.meas.append(m)
        self.t.append(session.sim.sim_time)


def status_line(session, episode: int, result_counts: tuple[int, int], t_start: float) -> str:
    ex, pol = session.executor_node, session.policy_node
    js = ex.jitter_stats()
    rate = js["ticks"] / max(1e-9, time.monotonic() - t_start)
    s = pol.status_msg
    c = ex.core.safety.counters
    return (f"ep {episode:2d} ok {result_counts[0]}/{result_counts[1]} | control {rate:5.1f} Hz "
            f"(p99 jitter {js.get('jitter_p99_ms', 0):.1f} ms) | chunks {s.chunks_produced:3d} "
            f"| inference {s.inference_ms:6.1f} ms | latency {s.latency_ms:6.1f} ms "
            f"| safety clamp {c.get('clamp', 0)} step {c.get('step_limit', 0)} hold {c.get('hold', 0)}")


def write_outputs(out: Path, rec: Recorder, emb, summary: dict) -> list[Path]:
    import cv2
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = []
    if rec.frames:
        h, w = rec.frames[0].shape[:2]
        vid = out / "top_camera.mp4"
        writer = cv2.VideoWriter(str(vid), cv2.VideoWriter_fourcc(*"mp4v"), rec._fps, (w, h))
        for f in rec.frames:
            writer.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
        writer.release()
        files.append(vid)
        idx = np.linspace(0, len(rec.frames) - 1, min(8, len(rec.frames))).astype(int)
        strip = np.concatenate([rec.frames[i] for i in idx], axis=1)
        cv2.imwrite(str(out / "top_camera_strip.png"), cv2.cvtColor(strip, cv2.COLOR_RGB2BGR))
        files.append(out / "top_camera_strip.png")
    if rec.cmd:
        t = np.array(rec.t) - rec.t[0]
        cmd, meas = np.array(rec.cmd), np.array(rec.meas)
        dims = [i for i, d in enumerate(emb.dims) if d.source == emb.dims[0].source][:7]
        fig, axes = plt.subplots(len(dims), 1, figsize=(10, 1.6 * len(dims)), sharex=True)
        for ax, i in zip(np.atleast_1d(axes), dims):
            ax.plot(t, cmd[:, i], label="commanded", lw=1.2)
            ax.plot(t, meas[:, i], label="measured", lw=1.0, alpha=0.8)
            ax.set_ylabel(emb.dims[i].name, rotation=0, ha="right", fontsize=8)
        np.atleast_1d(axes)[0].legend(loc="upper right", fontsize=8)
        np.atleast_1d(axes)[-1].set_xlabel("sim time (s)")
        fig.suptitle(f"{emb.name}: commanded vs measured ({summary['policy_name']})")
        fig.tight_layout()
        fig.savefig(out / "joints.png", dpi=90)
        plt.close(fig)
        files.append(out / "joints.png")
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    files.append(out / "summary.json")
    return files


def run(args: argparse.Namespace) -> int:
    from pi0_ros.ros.sim_session import SimSession

    emb_name = args.embodiment
    if emb_name not in DEMO_EMBODIMENTS:
        raise SystemExit(f"demo: no simulated robot '{emb_name}'; choose one of {', '.join(DEMO_EMBODIMENTS)}")
    scripted = args.policy == "scripted"
    if scripted and emb_name not in SCRIPTED_EMBODIMENTS:
        raise SystemExit(f"demo: the scripted expert picks cubes on {', '.join(SCRIPTED_EMBODIMENTS)} only so far, "
                         f"not on {emb_name}; run pi0 (--checkpoint DIR, or --checkpoint '' for random weights)")
    given = isettings.given_from_args(args)
    checkpoint = args.checkpoint
    if checkpoint is None and not scripted:
        checkpoint = default_checkpoint(emb_name)
        if checkpoint is None:
            raise SystemExit(f"demo: no trained pi0 checkpoint ships for {emb_name} yet. Choose:\n"
                             f"  --checkpoint DIR   a pi0 checkpoint trained for {emb_name}\n"
                             f"  --checkpoint ''    the tiny pi0 preset with RANDOM weights: shows the pipeline "
                             f"(sim, nodes, safety) moving the robot, not a trained policy")
    checkpoint = checkpoint or ""
    if scripted:
        name = "scripted expert (privileged sim state)"
    elif checkpoint:
        name = f"pi0 checkpoint {checkpoint}"
    else:
        name = "pi0 TINY preset with RANDOM weights"
        print("!" * 88 + "\n!! No trained checkpoint: the demo runs the tiny pi0 with RANDOM weights. The robot will\n"
              "!! move, but its actions are meaningless; this shows the pipeline, not a trained policy.\n" + "!" * 88,
              flush=True)
    out = Path(args.out or f"outputs/demo-{time.strftime('%Y%m%d-%H%M%S')}")
    out.mkdir(parents=True, exist_ok=True)
    print(f"[demo] starting simulator + observation + policy + executor for {emb_name}: {name}", flush=True)
    # Only the settings given as options become node parameters: the rest come from the checkpoint.
    extra = isettings.node_params(given)
    server = None
    if (args.remote or args.server_uri) and not scripted:
        from pi0_ros.serving.process import remote_policy_params

        params, server = remote_policy_params(checkpoint, given.get("noise_scale"), args.server_uri,
                                              num_steps=given.get("num_steps"))
        extra["policy"].update(params)
        name += f" behind {params['server_uri']}"
        print(f"[demo] policy served at {params['server_uri']} (openpi protocol)", flush=True)
    try:
        session = SimSession(emb_name, "pick_cube", checkpoint=checkpoint, scripted=scripted, seed=args.seed,
                             extra=extra)
    except BaseException:
        if server is not None:
            server.stop()
        raise
    settings = isettings.as_given({**session.policy_node.inference, "execute_steps": session.executor_node.execute_steps},
                                  given, "option")
    print(f"[demo] inference settings: {isettings.describe(settings)}", flush=True)
    rec = Recorder(session)
    results = []
    t_start = time.monotonic()
    try:
        session.wait_ready()
        print(f"[demo] policy ready ({time.monotonic() - t_start:.1f} s); running {args.duration:.0f} s", flush=True)
        t_start = time.monotonic()
        last_print = [0.0]
        episode = 0

        def on_step(s) -> None:
            rec.step(s)
            if time.monotonic() - last_print[0] >= 1.0:
                last_print[0] = time.monotonic()
                ok = sum(r.success for r in results)
                print("\r" + status_line(s, episode + 1, (ok, len(results)), t_start), end="", file=sys.stderr,
                      flush=True)

        while time.monotonic() - t_start < args.duration:
            prompt = PROMPTS[episode % 2]
            r = session.run_episode(args.seed + episode, prompt=prompt, max_time=args.episode_time, on_step=on_step)
            results.append(r)
            print(f"\n[demo] episode {episode + 1}: '{prompt}' -> {'SUCCESS' if r.success else 'no success'}"
                  + (f" after {r.time_to_success:.1f} s" if r.success else ""), file=sys.stderr, flush=True)
            episode += 1
        js = session.executor_node.jitter_stats()
        pol = session.policy_node
        summary = {
            "policy_name": name, "embodiment": emb_name, "random_weights": bool(pol.status_msg.random_weights),
            "checkpoint": checkpoint, "inference": {k: {"value": v.value, "source": v.source} for k, v in settings.items()},
            "episodes": len(results), "successes": sum(r.success for r in results),
            "control": js, "chunks": int(pol.status_msg.chunks_produced),
            "inference_ms_median": float(np.median(pol.model_ms)) if pol.model_ms else None,
            "latency_ms_median": float(np.median(pol.latency_ms)) if pol.latency_ms else None,
            "safety_interventions": {k: v for k, v in session.executor_node.core.safety.counters.items() if v},
            "per_episode": [r.to_dict() for r in results],
        }
    finally:
        session.close()
        if server is not None:
            server.stop()
    files = write_outputs(out, rec, session.executor_node.embodiment, summary)
    print(f"\n[demo] {summary['successes']}/{summary['episodes']} episodes succeeded; "
          f"control {js.get('ticks', 0)} ticks, p99 jitter {js.get('jitter_p99_ms', float('nan')):.2f} ms; "
          f"median inference {summary['inference_ms_median'] or 0:.0f} ms, latency {summary['latency_ms_median'] or 0:.0f} ms")
    print(f"[demo] wrote {out}/: " + ", ".join(f.name for f in files))
    return 0
