"""Where a checkpoint's missed grasps come from: open-loop aim or closed-loop drift (ROS-free).

`pi0-ros eval` says how often a pick fails and how far the fingers were from the cube when they
closed (pi0_ros.sim.grasp_report). Two runs of the same episodes, on the simulator core without
ROS, say why:

- **Teacher-forced aim.** The scripted expert drives the robot until ``lead`` ticks before its
  own close; the policy then gets that observation and predicts one chunk (noise 0). The joint
  targets at the chunk's first close go through forward kinematics: where the policy would close,
  relative to the cube, from a state an expert reached. A model that cannot see the cube well
  enough misses here.
- **State reliance** (``--shift``). The same, but the expert plans for the named cube moved by
  ``shift`` metres (one horizontal direction per seed) and the cube is put back before it drives:
  the robot's state now heads to the wrong place while the image shows the cube where it is. The
  share of the expert's error the policy's close keeps says where its aim comes from: 0, the image
  (it corrects); 1, the state (it continues the trajectory it is on). Teacher-forced aim from an
  expert's state is only evidence of seeing the cube when this share is low.
- **Closed loop.** The policy drives the robot from the start, one chunk every ``execute_steps``
  ticks, the simulator waiting for each chunk (no latency, no real-time chunking), and the grasp
  report scores each episode. A model that aims well from the expert's states but misses here
  drifts on its own trajectory (the states it visits are not the demonstrations').

It runs in seconds per episode: a development tool. The proof of a checkpoint is `pi0-ros eval`
through the ROS nodes and the command interfaces.
"""
from __future__ import annotations

import argparse
import json
import statistics
from typing import TYPE_CHECKING, Any

import numpy as np

from pi0_ros.sim.grasp_report import AXES, CLOSE_COMMANDED, median_abs_offset

if TYPE_CHECKING:  # pragma: no cover
    from pi0_ros.policy import Policy, PolicyInput
    from pi0_ros.sim.env import SimEnv

MISS = 0.015  # m: a close this far off the cube on a horizontal pinch axis is counted as a miss


def policy_input(env: "SimEnv", policy: "Policy") -> "PolicyInput":
    """The observation the nodes would assemble: each camera the model reads, cut to the
    embodiment's region of interest and resized with padding; the padded robot-unit state."""
    from pi0_ros.images import model_image
    from pi0_ros.policy import PolicyInput

    size = policy.config.vision.image_size
    cams = {c.slot: c for c in env.embodiment.cameras if c.slot in policy.camera_names and c.slot in env.scene.cameras}
    frames = env.render(list(cams))
    images = {s: model_image(frames[s], c.crop, size) for s, c in cams.items()}
    return PolicyInput(images=images, state=env.embodiment.padded_state(env.robot_state(), policy.action_dim),
                       prompt=env.prompt)


def policy_actions(env: "SimEnv", policy: "Policy") -> np.ndarray:
    """The policy's chunk for the env's current observation: (chunk_size, n) robot units,
    deterministic (noise 0)."""
    out = policy.infer(policy_input(env, policy), noise=np.zeros((policy.chunk_size, policy.action_dim)))
    return env.embodiment.robot_actions(out.actions)


def _close_offset(env: "SimEnv", site: str, joints: np.ndarray, frame: np.ndarray, cube: np.ndarray) -> list[float]:
    """Cube centre minus the pinch point the robot-unit ``joints`` put it at (forward kinematics on
    a scratch copy), in ``frame``'s axes (m)."""
    import mujoco

    data = mujoco.MjData(env.model)
    data.qpos[:] = env.data.qpos
    for i, b in enumerate(env.scene.dims):
        if b is not None and env.embodiment.dims[i].kind == "joint":
            data.qpos[b.qpos_adr] = b.to_qpos(float(joints[i]))
    mujoco.mj_kinematics(env.model, data)
    sid = mujoco.mj_name2id(env.model, mujoco.mjtObj.mjOBJ_SITE, site)
    return [round(float(v), 4) for v in frame.T @ (cube - data.site_xpos[sid])]


def teacher_forced(env: "SimEnv", policy: "Policy", seed: int, lead: int, shift: float = 0.0) -> dict[str, Any]:
    """The policy's predicted close from the expert's state ``lead`` ticks before the expert closes.

    ``shift`` (m): the expert plans for the named cube moved that far (direction 90 deg x (seed
    mod 4) in the world's horizontal plane), and the cube is put back before it drives."""
    import mujoco

    from pi0_ros.sim.expert import make_expert
    from pi0_ros.sim.tasks import cube_name

    emb = env.embodiment
    env.reset(seed)
    adr = env.scene.objects[cube_name(env.task.target)].qpos_adr
    true = env.data.qpos[adr:adr + 3].copy()
    angle = np.pi / 2 * (seed % 4)
    env.data.qpos[adr:adr + 3] = true + shift * np.array([np.cos(angle), np.sin(angle), 0.0])
    mujoco.mj_forward(env.model, env.data)
    expert = make_expert(env)  # plans from the state right after the reset, for the (moved) cube
    env.data.qpos[adr:adr + 3] = true
    mujoco.mj_forward(env.model, env.data)
    g = env.scene.gripper_dim[expert.arm]
    plan = np.array(expert.plan)
    closes = np.flatnonzero(emb.to_model(plan)[:, g] >= CLOSE_COMMANDED)
    if closes.size == 0:
        raise RuntimeError(f"seed {seed}: the expert's plan never closes the gripper")
    t_close = int(closes[0])
    for _ in range(max(t_close - lead, 0)):
        for name, vals in emb.split_outputs(expert.act()).items():
            env.set_command(name, vals)
        env.step()
    site = env.scene.ee_sites[expert.arm]
    cube = env.object_position(cube_name(env.task.target))
    frame = env.site_rotation(site)
    chunk = policy_actions(env, policy)
    pred = np.flatnonzero(emb.to_model(chunk)[:, g] >= CLOSE_COMMANDED)
    out = {"seed": seed, "lead": lead, "expert_offset": dict(zip(AXES, _close_offset(env, site, plan[t_close], frame, cube))),
           "predicted_close_step": None, "policy_offset": None}
    if pred.size:
        out["predicted_close_step"] = int(pred[0])
        out["policy_offset"] = dict(zip(AXES, _close_offset(env, site, chunk[pred[0]], frame, cube)))
    return out


def shifted_aim(env: "SimEnv", policy: "Policy", seed: int, lead: int, shift: float) -> dict[str, Any]:
    """:func:`teacher_forced` from an expert misled by ``shift`` m; ``kept``: the share of the
    expert's horizontal pinch-frame error that the policy's predicted close keeps."""
    out = {**teacher_forced(env, policy, seed, lead, shift), "shift_m": shift, "kept": None}
    if out["policy_offset"] is not None:
        h = np.array([out["expert_offset"][a] for a in AXES[1:]])  # closing, across: horizontal in a top-down grasp
        p = np.array([out["policy_offset"][a] for a in AXES[1:]])
        out["kept"] = round(float(p @ h / (h @ h)), 3)
    return out


def closed_loop(env: "SimEnv", policy: "Policy", seed: int, execute_steps: int) -> dict[str, Any]:
    """One episode driven by the policy, lockstep; the grasp report's outcome and close offset."""
    from pi0_ros.sim.grasp_report import GraspMonitor

    env.reset(seed)
    monitor = GraspMonitor()
    ticks = int(round(env.task.duration_s / env.embodiment.dt))
    chunk = np.empty(0)
    success = False
    for t in range(ticks):
        if t % execute_steps == 0:
            chunk = policy_actions(env, policy)
        env.set_targets(chunk[t % execute_steps])
        env.step()
        monitor.update(env)
        if env.success():
            success = True
            break
    rep = monitor.report(success)
    return {"seed": seed, "outcome": rep.outcome, "close_offset": rep.close_offset}


def _miss_share(offsets: list[dict[str, float]]) -> float | None:
    if not offsets:
        return None
    return round(sum(max(abs(o["closing"]), abs(o["across"])) >= MISS for o in offsets) / len(offsets), 3)


def _means(offsets: list[dict[str, float]]) -> dict[str, float] | None:
    if not offsets:
        return None
    return {a: round(statistics.fmean(o[a] for o in offsets), 4) for a in AXES}


def summarise(aim: dict[int, list[dict]], loop: list[dict], shifted: dict[int, list[dict]] | None = None) -> dict[str, Any]:
    """Per lead: how often the predicted close misses by >= MISS on a horizontal axis, the median
    |offset| and the mean (signed: a one-sided miss is a bias); the same for the closed loop; with
    ``shifted``, per lead the median share of a misled expert's error the policy keeps."""
    out: dict[str, Any] = {"miss_threshold_m": MISS, "teacher_forced": {}}
    if shifted:
        out["state_reliance"] = {}
        for lead, rows in shifted.items():
            kept = [r["kept"] for r in rows if r["kept"] is not None]
            out["state_reliance"][str(lead)] = {
                "episodes": len(rows), "no_close_predicted": len(rows) - len(kept),
                "median_kept": round(statistics.median(kept), 3) if kept else None}
    for lead, rows in aim.items():
        offs = [r["policy_offset"] for r in rows if r["policy_offset"]]
        out["teacher_forced"][str(lead)] = {
            "episodes": len(rows), "no_close_predicted": sum(r["policy_offset"] is None for r in rows),
            "miss_share": _miss_share(offs), "median_abs_offset_m": median_abs_offset(offs), "mean_offset_m": _means(offs)}
    offs = [r["close_offset"] for r in loop if r["close_offset"]]
    out["closed_loop"] = {
        "episodes": len(loop), "successes": sum(r["outcome"] == "success" for r in loop),
        "outcomes": {o: n for o in sorted({r["outcome"] for r in loop}) if (n := sum(r["outcome"] == o for r in loop))},
        "miss_share": _miss_share(offs), "median_abs_offset_m": median_abs_offset(offs), "mean_offset_m": _means(offs)}
    return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, help="pi0 checkpoint directory")
    parser.add_argument("--embodiment", default="trossen_bimanual")
    parser.add_argument("--task", default="pick_cube", help="pick_cube, pick_red_cube, pick_blue_cube")
    parser.add_argument("--episodes", type=int, default=50)
    parser.add_argument("--seed", type=int, default=1000, help="seed of the first episode (then +1 each)")
    parser.add_argument("--lead", default="8,16,24",
                        help="teacher-forced: ticks before the expert's close at which the policy predicts (comma list)")
    parser.add_argument("--execute-steps", type=int, default=0,
                        help="closed loop: actions executed per chunk (0 = the embodiment's)")
    parser.add_argument("--shift", type=float, default=0.0, metavar="M",
                        help="also measure state reliance: the expert plans for the cube moved by M metres, and the "
                             "share of that error the policy's close keeps is reported (0: off; try 0.025)")
    parser.add_argument("--json", action="store_true", help="print one JSON object (summary and per episode)")


def run(args: argparse.Namespace) -> int:
    from pi0_ros.policy import Policy
    from pi0_ros.robots.embodiment import load_embodiment
    from pi0_ros.sim.env import SimEnv

    leads = [int(x) for x in str(args.lead).split(",") if x.strip()]
    if args.episodes < 1 or any(k < 1 for k in leads):
        raise SystemExit("--episodes and every --lead must be >= 1")
    if not (np.isfinite(args.shift) and 0.0 <= args.shift <= 0.1):
        raise SystemExit("--shift must be within 0..0.1 m")
    emb = load_embodiment(args.embodiment)
    policy = Policy.from_checkpoint(args.checkpoint, asset_id=emb.asset_id, noise_scale=0.0)
    execute = args.execute_steps or emb.execute_steps
    if not 1 <= execute <= policy.chunk_size:
        raise SystemExit(f"--execute-steps must be within 1..{policy.chunk_size}")
    env = SimEnv(args.embodiment, task=args.task, seed=args.seed, render=True)
    try:
        seeds = range(args.seed, args.seed + args.episodes)
        aim = {k: [teacher_forced(env, policy, s, k) for s in seeds] for k in leads}
        shifted = {k: [shifted_aim(env, policy, s, k, args.shift) for s in seeds] for k in leads} if args.shift else {}
        loop = [closed_loop(env, policy, s, execute) for s in seeds]
    finally:
        env.close()
    summary = {"embodiment": emb.name, "checkpoint": args.checkpoint, "task": args.task, "execute_steps": execute,
               "seeds": f"{args.seed}-{args.seed + args.episodes - 1}", **summarise(aim, loop, shifted)}
    if args.json:
        per = {"teacher_forced": aim, "closed_loop": loop, **({"state_reliance": shifted} if shifted else {})}
        print(json.dumps({**summary, "per_episode": per}, indent=2))
    else:
        for lead, s in summary["teacher_forced"].items():
            print(f"teacher-forced, {lead} ticks before the expert's close: misses {s['miss_share']}, "
                  f"median |offset| {s['median_abs_offset_m']}, mean {s['mean_offset_m']}")
        for lead, s in summary.get("state_reliance", {}).items():
            print(f"state reliance, {lead} ticks before the close of an expert misled by {args.shift} m: the policy "
                  f"keeps a median {s['median_kept']} of its error (0: aims from the image, 1: follows the state)")
        c = summary["closed_loop"]
        print(f"closed loop: {c['successes']}/{c['episodes']} successes, outcomes {c['outcomes']}, misses "
              f"{c['miss_share']}, median |offset| {c['median_abs_offset_m']}, mean {c['mean_offset_m']}")
    return 0
