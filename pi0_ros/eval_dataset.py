"""`pi0-ros eval-dataset`: open-loop evaluation of a checkpoint on recorded episodes.

    pi0-ros eval-dataset --dataset datasets/pick --checkpoint runs/ft/checkpoints/latest [--every 10]

For every k-th frame of the held-out episodes the policy sees the recorded observation (images,
state, prompt) and predicts a chunk; the chunk is compared with the actions recorded from that
frame on (robot units, the dataset's dim order). Reported per action dim: the mean absolute
error over the first ``execute_steps`` actions (what the executor would run) and over the whole
chunk, only where the recording has actions (not past the episode end). Written to OUT:
metrics.json, and episode_<e>.png per episode with the recorded action trajectories and the
predicted chunks drawn from the frames they start at.

Held-out episodes: --episodes (indices), else the last ``--holdout`` fraction of the dataset's
episodes (at least one). Sampling is deterministic by default (--noise-scale 0).
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)


def held_out_episodes(episodes: list[int], holdout: float, chosen: list[int] | None = None) -> list[int]:
    """The episodes to evaluate: ``chosen`` if given (checked), else the last ``holdout`` fraction."""
    if chosen:
        missing = sorted(set(chosen) - set(episodes))
        if missing:
            raise ValueError(f"episode(s) {missing} not in the dataset (it has {episodes[0]}..{episodes[-1]})")
        return sorted(chosen)
    if not 0.0 < holdout <= 1.0:
        raise ValueError(f"--holdout must be in (0, 1], got {holdout}")
    n = max(1, int(round(len(episodes) * holdout)))
    return episodes[-n:]


def to_robot(x: np.ndarray, dims: list[dict[str, Any]]) -> np.ndarray:
    """Model convention (grippers in [0, 1]) -> robot units, per the dataset's dims."""
    out = np.array(x, dtype=np.float64, copy=True)
    for i, d in enumerate(dims):
        if d.get("kind") == "gripper" and d.get("open") is not None:
            out[..., i] = d["open"] + out[..., i] * (d["closed"] - d["open"])
    return out


def evaluate(ds: Any, policy: Any, episodes: list[int], every: int, execute_steps: int,
             noise_seed: int = 0) -> dict[str, Any]:
    """Predicted vs recorded chunks on every ``every``-th frame of ``episodes``.

    ds: a Pi0Dataset in model convention with chunk_size == the policy's; policy: a Policy.
    Returns per-dim errors and, per episode, the predictions for plotting.
    """
    if every < 1:
        raise ValueError(f"--every must be >= 1, got {every}")
    H, D = policy.chunk_size, policy.action_dim
    slots = ds.slots
    if int(slots.max()) >= D:
        raise ValueError(f"the dataset uses slots up to {int(slots.max())}; the model's action_dim is {D}")
    n = len(ds.dims)
    exec_n = min(execute_steps, H)
    err_exec, err_chunk = np.zeros(n), np.zeros(n)
    cnt_exec, cnt_chunk = np.zeros(n), np.zeros(n)
    rng = np.random.default_rng(noise_seed)
    per_episode: dict[int, dict[str, Any]] = {}
    for e in episodes:
        idx = np.flatnonzero(ds.episode_index == e)
        starts = idx[::every]
        preds = []
        for i in starts:
            s = ds[int(i)]
            state = np.zeros(D)
            state[slots] = s["state"].numpy()
            images = {k: v.numpy() for k, v in s.get("images", {}).items() if k in policy.camera_names}
            from pi0_ros.policy import PolicyInput

            noise = policy.noise_scale * rng.standard_normal((H, D))
            out = policy.infer(PolicyInput(images=images, state=state, prompt=s["prompt"]), noise=noise)
            pred = to_robot(out.actions[:, slots], ds.dims)                       # (H, n) robot units
            rec = to_robot(s["actions"].numpy(), ds.dims)                          # (H, n)
            valid = ~s["action_is_pad"].numpy()                                    # (H,)
            ae = np.abs(pred - rec)
            err_chunk += ae[valid].sum(0)
            cnt_chunk += valid.sum()
            v_exec = valid[:exec_n]
            err_exec += ae[:exec_n][v_exec].sum(0)
            cnt_exec += v_exec.sum()
            preds.append((int(i - idx[0]), pred))
        per_episode[int(e)] = {"frames": idx, "predictions": preds, "prompt": ds.tasks[int(ds.task_index[idx[0]])]}
    names = [d["name"] for d in ds.dims]
    mae_exec = err_exec / np.maximum(cnt_exec, 1)
    mae_chunk = err_chunk / np.maximum(cnt_chunk, 1)
    return {
        "episodes": [int(e) for e in episodes],
        "every": every, "chunk_size": H, "execute_steps": exec_n,
        "chunks": int(sum(len(p["predictions"]) for p in per_episode.values())),
        "dims": names,
        "mae_execute_steps": dict(zip(names, mae_exec.tolist())),
        "mae_chunk": dict(zip(names, mae_chunk.tolist())),
        "_per_episode": per_episode,
    }


def plot_episode(path: Path, ds: Any, episode: int, data: dict[str, Any], execute_steps: int) -> None:
    """Recorded action trajectories (black) and each predicted chunk from its start frame (colour)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    idx = data["frames"]
    rec = to_robot(ds.action[idx], ds.dims)
    t = np.arange(len(idx)) / ds.fps
    n = rec.shape[1]
    cols = 2 if n > 4 else 1
    rows = int(np.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(6 * cols, 1.8 * rows + 0.6), squeeze=False, sharex=True)
    for j in range(n):
        ax = axes[j // cols][j % cols]
        ax.plot(t, rec[:, j], color="black", lw=1.2, label="recorded")
        for k, (start, pred) in enumerate(data["predictions"]):
            tt = (start + np.arange(pred.shape[0])) / ds.fps
            keep = tt <= t[-1] + 1e-9
            ax.plot(tt[keep], pred[keep, j], lw=0.8, alpha=0.7, color=f"C{k % 10}")
            ex = min(execute_steps, int(keep.sum()))
            ax.plot(tt[:ex], pred[:ex, j], lw=1.8, alpha=0.9, color=f"C{k % 10}")
        ax.set_title(ds.dims[j]["name"], fontsize=9)
        ax.tick_params(labelsize=7)
    for j in range(n, rows * cols):
        axes[j // cols][j % cols].axis("off")
    fig.suptitle(f"episode {episode}: {data['prompt']!r} (thick: first {execute_steps} actions of each chunk)", fontsize=10)
    fig.supxlabel("s")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def format_table(result: dict[str, Any]) -> str:
    w = max(len(n) for n in result["dims"] + ["dim"])
    lines = [f"{'dim':<{w}}  {'MAE first ' + str(result['execute_steps']):>14}  {'MAE chunk':>10}"]
    for n in result["dims"]:
        lines.append(f"{n:<{w}}  {result['mae_execute_steps'][n]:>14.4f}  {result['mae_chunk'][n]:>10.4f}")
    return "\n".join(lines)


def run_eval(dataset: str, checkpoint: str, *, out: str | None = None, every: int = 10, episodes: list[int] | None = None,
             holdout: float = 0.1, execute_steps: int | None = None, device: str = "cpu", num_steps: int = 10,
             noise_scale: float = 0.0, seed: int = 0, asset_id: str | None = None,
             dataset_map: str | None = None) -> dict[str, Any]:
    from pi0_ros.data.dataset import Pi0Dataset
    from pi0_ros.policy import Policy

    ds_probe = Pi0Dataset(dataset, chunk_size=1, load_images=False, mapping=dataset_map)
    policy = Policy.from_checkpoint(checkpoint, asset_id=asset_id or ds_probe.asset_id, device=device,
                                    num_steps=num_steps, noise_scale=noise_scale)
    ds = Pi0Dataset(dataset, chunk_size=policy.chunk_size, convention="model", mapping=dataset_map,
                    camera_slots=[c for c in ds_probe.camera_slots if c in policy.camera_names])
    if execute_steps is None:
        execute_steps = policy.chunk_size // 2
        try:
            from pi0_ros.robots.embodiment import load_embodiment

            execute_steps = load_embodiment(ds.embodiment).execute_steps
        except Exception:  # noqa: BLE001 - a foreign dataset without an embodiment: half a chunk
            pass
    eps = held_out_episodes(ds.episodes(), holdout, episodes)
    result = evaluate(ds, policy, eps, every, execute_steps, noise_seed=seed)
    out_dir = Path(out) if out else Path(checkpoint) / "eval_dataset"
    out_dir.mkdir(parents=True, exist_ok=True)
    plots = []
    for e, data in result.pop("_per_episode").items():
        p = out_dir / f"episode_{e:06d}.png"
        plot_episode(p, ds, e, data, result["execute_steps"])
        plots.append(str(p))
    result.update({"dataset": str(dataset), "checkpoint": str(checkpoint), "plots": plots, "units": "robot"})
    (out_dir / "metrics.json").write_text(json.dumps(result, indent=2))
    result["out"] = str(out_dir)
    return result


# ---------------------------------------------------------------------------------- CLI
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", required=True, help="dataset directory (bag2dataset or LeRobot v3.0)")
    parser.add_argument("--checkpoint", required=True, help="pi0 checkpoint directory")
    parser.add_argument("--out", default=None, help="output directory (default: CHECKPOINT/eval_dataset)")
    parser.add_argument("--every", type=int, default=10, help="evaluate every k-th frame of each episode")
    parser.add_argument("--episodes", type=lambda s: [int(x) for x in s.split(",") if x], default=None,
                        help="comma-separated episode indices (default: the last --holdout fraction)")
    parser.add_argument("--holdout", type=float, default=0.1, help="fraction of episodes, taken from the end")
    parser.add_argument("--execute-steps", type=int, default=None,
                        help="actions the executor runs per chunk (default: the embodiment's, else chunk/2)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--num-steps", type=int, default=10, help="flow-matching integration steps")
    parser.add_argument("--noise-scale", type=float, default=0.0, help="sampler noise std (0: deterministic)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--asset-id", default=None, help="norm stats asset (default: the dataset's)")
    parser.add_argument("--dataset-map", default=None, help="mapping for LeRobot datasets (see pi0-ros train)")


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        r = run_eval(args.dataset, args.checkpoint, out=args.out, every=args.every, episodes=args.episodes,
                     holdout=args.holdout, execute_steps=args.execute_steps, device=args.device,
                     num_steps=args.num_steps, noise_scale=args.noise_scale, seed=args.seed, asset_id=args.asset_id,
                     dataset_map=args.dataset_map)
    except (ValueError, FileNotFoundError) as e:
        print(f"eval-dataset: error: {e}", file=sys.stderr)
        return 1
    print(f"episodes {r['episodes']}, {r['chunks']} chunks (every {r['every']} frames), robot units:")
    print(format_table(r))
    print(f"plots: {', '.join(r['plots'])}")
    print(f"metrics: {Path(r['out']) / 'metrics.json'}")
    return 0
