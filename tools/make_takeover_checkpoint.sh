#!/usr/bin/env bash
# Rounds of expert takeovers (DAgger-style) on top of the multi-robot checkpoint.
#   diagnose-grasp showed the single-arm misses are closed-loop drift: the policy aims within
#   millimetres from the expert's states, but on its own trajectory reaches states no demonstration
#   visited and closes beside the cube. Each round records the expert recovering from exactly those
#   states and fine-tunes on them:
#   1. per robot, `pi0-ros collect-takeover` (ROS-free, lockstep; pi0_ros/sim/takeover.py): the current
#      checkpoint drives, the scripted expert takes over at a random tick (from half way to its nominal
#      close until 1.5 s after it; a quarter of the episodes are plain demonstrations) from the measured
#      joints and picks the cube; its frames are the dataset. Robots collect side by side (PARALLEL).
#   2. ONE model, from the current checkpoint, on every round's takeover datasets so far (DAgger's
#      aggregation; mixed n^0.43), the VLM's layers and the action expert training (vision tower frozen),
#      --delta-actions, --keep-norm-stats (BASE's normalisation throughout).
#   Then tools/eval_multirobot.sh: each robot through the ROS nodes on seeds 1000.., and prompt-swapped;
#   the checkpoint's inference.json.
# Measured (README, "Expert takeovers"): one round with these defaults did not improve the closed loop
#   (diagnose-grasp, validation seeds 7000-7049: UR5e 36 -> 32/50, Franka 39 -> 28/50).
# CPU budget per round (defaults, the 2-core box), stated before the run: collection 200 + 200 + 40 episodes,
#   three collectors side by side (~18 min: UR5e 17.5, Franka 12, ALOHA 6 min measured); training
#   3000 steps x ~0.32 s (16 min measured). Evaluation 6 x 50 episodes in real time (~25 min). One round: ~60 min.
# Seeds: round k's takeovers ALOHA 10000.., UR5e 12000.., Franka 13000.., each + 500 (k - 1) (disjoint from
#   every demonstration seed, the evaluation seeds 1000-1049 and diagnose-grasp's validation seeds
#   7000-7049); training seed 0.
# Usage: tools/make_takeover_checkpoint.sh [work_dir]     (default outputs/takeover)
#   env: BASE (the checkpoint round 1 starts from; default checkpoints/pi0_sim_multi_pick_cube, copied to
#        WORK/base on the first run so that a rerun starts from the same weights), OUT (default WORK/checkpoint:
#        copy it over the published one only when its evaluation is better),
#        ROUNDS (1), ROBOTS, EPISODES ("trossen_bimanual=40 ur5e=200 franka=200", per round), PARALLEL (3),
#        STEPS (per round, 3000), BATCH (32), LR (1e-4), SAVE_EVERY (500), EVAL (0: no evaluation),
#        EXTRA_DATASETS (more datasets in every round's training, e.g. the recipe's demonstrations),
#        EVAL_EPISODES (50), EVAL_DOMAIN, PI0_ROS, PYTHON
# Every step whose output is in the work dir already is skipped; training resumes.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
work=${1:-$here/outputs/takeover}
BASE=${BASE:-$here/checkpoints/pi0_sim_multi_pick_cube}
OUT=${OUT:-$work/checkpoint}
ROUNDS=${ROUNDS:-1}
read -ra robots <<< "${ROBOTS:-trossen_bimanual ur5e franka}"
declare -A episodes=([trossen_bimanual]=40 [ur5e]=200 [franka]=200) seed=([trossen_bimanual]=10000 [ur5e]=12000 [franka]=13000)
for kv in ${EPISODES:-}; do episodes[${kv%%=*}]=${kv#*=}; done
PARALLEL=${PARALLEL:-3}
STEPS=${STEPS:-3000}
BATCH=${BATCH:-32}
LR=${LR:-1e-4}
SAVE_EVERY=${SAVE_EVERY:-500}
export MUJOCO_GL=${MUJOCO_GL:-egl}
read -ra pi0 <<< "${PI0_ROS:-$here/.venv/bin/pi0-ros}"
mkdir -p "$work"
[ -f "$work/base/model.safetensors" ] || cp -r "$BASE" "$work/base"
last() { ls -d "$1"/checkpoints/step_* | sort | tail -1; }
current=$work/base
read -ra datasets <<< "${EXTRA_DATASETS:-}"
for ((k = 1; k <= ROUNDS; k++)); do
  rd=$work/round$k
  mkdir -p "$rd"
  # 1. Takeovers by the current checkpoint, PARALLEL robots at a time (one torch thread each).
  pids=()
  for r in "${robots[@]}"; do
    datasets+=("$rd/takeover_$r")
    [ -f "$rd/takeover_$r/meta/info.json" ] && continue
    [ -n "${seed[$r]:-}" ] || { echo "make_takeover_checkpoint.sh: no takeover seed for $r" >&2; exit 2; }
    OMP_NUM_THREADS=1 "${pi0[@]}" collect-takeover --checkpoint "$current" --embodiment "$r" \
      --episodes "${episodes[$r]}" --seed $((seed[$r] + 500 * (k - 1))) --out "$rd/takeover_$r" --json \
      > "$rd/takeover_$r.json" 2> "$rd/takeover_$r.log" &
    pids+=($!)
    if ((${#pids[@]} >= PARALLEL)); then wait "${pids[0]}"; pids=("${pids[@]:1}"); fi
  done
  for p in "${pids[@]}"; do wait "$p"; done
  # 2. Fine-tune the current checkpoint on every round's takeovers so far.
  "${pi0[@]}" train --dataset "${datasets[@]}" --init "$current" --freeze-vision --keep-norm-stats --delta-actions \
    --out "$rd/train" --steps "$STEPS" --lr "$LR" --warmup 200 --batch-size "$BATCH" --seed 0 \
    --save-every "$SAVE_EVERY" --log-every 50 --resume | tee "$rd/train.json"
  current=$(last "$rd/train")
done
rm -rf "$OUT" && mkdir -p "$(dirname "$OUT")"
cp -r "$current" "$OUT"
rm -rf "$OUT/train_state"
cp "$rd/train/loss.png" "$OUT/" 2>/dev/null || true
# 3. Each robot through the ROS nodes, and the checkpoint's inference.json.
[ "${EVAL:-1}" = 0 ] && exit 0
ROBOTS="${robots[*]}" PI0_ROS="${pi0[*]}" \
  NOTE="$ROUNDS round(s) of expert takeovers (tools/make_takeover_checkpoint.sh) on the multi-robot checkpoint" \
  "$here/tools/eval_multirobot.sh" "$OUT" "$work"
