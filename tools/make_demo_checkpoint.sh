#!/usr/bin/env bash
# Reproduce checkpoints/pi0_sim_aloha_pick_cube, the checkpoint `make demo` ships:
#   record scripted demonstrations through the ROS pipeline into rosbags -> convert to a dataset
#   -> train the `sim` preset from scratch on CPU -> evaluate closed loop through the ROS nodes.
# Usage: tools/make_demo_checkpoint.sh [work_dir]   (env: EPISODES, STEPS, BATCH, LR, EVAL_EPISODES)
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
work=${1:-$here/outputs/proof}
EPISODES=${EPISODES:-100}
STEPS=${STEPS:-4000}
BATCH=${BATCH:-32}
LR=${LR:-3e-4}
EVAL_EPISODES=${EVAL_EPISODES:-50}
export ROS_AUTOMATIC_DISCOVERY_RANGE=${ROS_AUTOMATIC_DISCOVERY_RANGE:-LOCALHOST} MUJOCO_GL=${MUJOCO_GL:-egl}
pi0=("$here/.venv/bin/pi0-ros")
mkdir -p "$work"
# 1. Demonstrations (seeds 0..EPISODES-1; the seed decides the cube layout and which cube is named).
[ -d "$work/bags" ] || "${pi0[@]}" collect --episodes "$EPISODES" --seed 0 --out "$work/bags" --json > "$work/collect.json"
# 2. Dataset (successful episodes only; action labels = the recorded commands).
[ -d "$work/dataset" ] || "${pi0[@]}" bag2dataset "$work"/bags/episode_* --embodiment trossen_bimanual --out "$work/dataset" --success-only > "$work/bag2dataset.json"
# 3. Train from scratch (seed 0).
"${pi0[@]}" train --dataset "$work/dataset" --preset sim --out "$work/train" --steps "$STEPS" --batch-size "$BATCH" \
  --lr "$LR" --warmup 300 --seed 0 --save-every 1000 --log-every 50 --delta-actions --resume
ckpt=$(ls -d "$work"/train/checkpoints/step_* | sort | tail -1)
rm -rf "$here/checkpoints/pi0_sim_aloha_pick_cube" && mkdir -p "$here/checkpoints"
cp -r "$ckpt" "$here/checkpoints/pi0_sim_aloha_pick_cube"
rm -rf "$here/checkpoints/pi0_sim_aloha_pick_cube/train_state"   # optimizer state: only for --resume
cp "$work/train/loss.png" "$here/checkpoints/pi0_sim_aloha_pick_cube/"
# 4. Closed-loop evaluation through the ROS nodes on unseen seeds.
"${pi0[@]}" eval --checkpoint "$here/checkpoints/pi0_sim_aloha_pick_cube" --episodes "$EVAL_EPISODES" --seed 1000 --json \
  > "$work/eval.json"
python3 -c "import json; d=json.load(open('$work/eval.json')); print('success rate', d['success_rate'])"
