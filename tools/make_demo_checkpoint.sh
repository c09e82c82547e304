#!/usr/bin/env bash
# Reproduce checkpoints/pi0_sim_aloha_pick_cube, the checkpoint `make demo` ships:
#   record scripted demonstrations through the ROS pipeline into rosbags -> convert to a dataset
#   -> give the from-scratch `sim` preset's VLM its visual grounding (pretrain-vlm) -> train the
#   action expert on the demonstrations on CPU -> evaluate closed loop through the ROS nodes.
# Usage: tools/make_demo_checkpoint.sh [work_dir]
#   env: EPISODES (per collector), COLLECTORS, STEPS, BATCH, LR, EVAL_EPISODES
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
work=${1:-$here/outputs/proof}
EPISODES=${EPISODES:-80}
COLLECTORS=${COLLECTORS:-3}
STEPS=${STEPS:-10000}
BATCH=${BATCH:-32}
LR=${LR:-3e-4}
EVAL_EPISODES=${EVAL_EPISODES:-50}
export ROS_AUTOMATIC_DISCOVERY_RANGE=${ROS_AUTOMATIC_DISCOVERY_RANGE:-LOCALHOST} MUJOCO_GL=${MUJOCO_GL:-egl}
pi0=("$here/.venv/bin/pi0-ros")
mkdir -p "$work"
# 1. Demonstrations: COLLECTORS sessions side by side, each on its own ROS domain (the sim runs
#    in real time and one session uses about half a core). Collector i records seeds
#    i*EPISODES .. (i+1)*EPISODES-1; the seed decides the cube layout and which cube is named.
if [ ! -d "$work/bags_0" ]; then
  pids=()
  for ((i = 0; i < COLLECTORS; i++)); do
    ROS_DOMAIN_ID=$((60 + i)) "${pi0[@]}" collect --episodes "$EPISODES" --seed $((i * EPISODES)) \
      --out "$work/bags_$i" --json > "$work/collect_$i.json" 2> "$work/collect_$i.log" &
    pids+=($!)
  done
  for p in "${pids[@]}"; do wait "$p"; done
fi
# 2. Dataset (successful episodes only; action labels = the recorded commands).
[ -d "$work/dataset" ] || "${pi0[@]}" bag2dataset "$work"/bags_*/episode_* --embodiment trossen_bimanual \
  --out "$work/dataset" --success-only > "$work/bag2dataset.json"
# 3. VLM grounding on rendered layouts (seeds 100000..; seed 0), the stand-in for PaliGemma's
#    pre-training: where is the cube the prompt names? (about 9 min)
[ -f "$work/pretrain/model.safetensors" ] || "${pi0[@]}" pretrain-vlm --out "$work/pretrain" --layouts 4000 \
  --steps 1500 --seed 0 > "$work/pretrain.json"
# 4. Train the action expert on the demonstrations, VLM frozen (seed 0).
"${pi0[@]}" train --dataset "$work/dataset" --init "$work/pretrain" --freeze-vlm --out "$work/train" --steps "$STEPS" \
  --batch-size "$BATCH" --lr "$LR" --warmup 300 --seed 0 --save-every 2500 --log-every 50 --delta-actions --resume
ckpt=$(ls -d "$work"/train/checkpoints/step_* | sort | tail -1)
rm -rf "$here/checkpoints/pi0_sim_aloha_pick_cube" && mkdir -p "$here/checkpoints"
cp -r "$ckpt" "$here/checkpoints/pi0_sim_aloha_pick_cube"
rm -rf "$here/checkpoints/pi0_sim_aloha_pick_cube/train_state"   # optimizer state: only for --resume
cp "$work/train/loss.png" "$here/checkpoints/pi0_sim_aloha_pick_cube/"
# 5. Closed-loop evaluation through the ROS nodes on unseen seeds (1000..), then the prompt swap.
"${pi0[@]}" eval --checkpoint "$here/checkpoints/pi0_sim_aloha_pick_cube" --episodes "$EVAL_EPISODES" --seed 1000 --json \
  > "$work/eval.json"
"${pi0[@]}" eval --checkpoint "$here/checkpoints/pi0_sim_aloha_pick_cube" --episodes "$EVAL_EPISODES" --seed 1000 \
  --swap-prompt --json > "$work/eval_swapped.json"
python3 -c "import json; d=json.load(open('$work/eval.json')); print('success rate', d['success_rate'])"
