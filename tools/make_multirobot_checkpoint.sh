#!/usr/bin/env bash
# One π0 for three robots: checkpoints/pi0_sim_multi_pick_cube.
#   For each robot (ALOHA = trossen_bimanual, UR5e, Franka): scripted demonstrations recorded through
#   the ROS pipeline into rosbags, clean and with the simulated arms pushed off course (DART-style),
#   converted to datasets (tools/proof_data.sh with EMBODIMENT, its own work subdir and seeds) -> one
#   VLM grounding over all three robots' top cameras, continued from ALOHA's (pretrain-vlm --init) -> ONE model trained
#   on every dataset in each stage (the stages of tools/make_demo_checkpoint.sh): actions padded to the
#   model's 32 dims, per-embodiment norm stats under each asset id, datasets mixed n^0.43 (pi0_ros/
#   training/train.py) -> closed-loop evaluation of each robot through the ROS nodes, and with the prompt
#   swapped, on the evaluation seeds 1000..; a per-robot table.
#
# CPU budget (defaults; this 2-core box, other work aside), stated before the run:
#   collection  per robot 3 clean collectors x 80 episodes side by side (~540 s, the ALOHA collect JSONs'
#               wall_s), then 2 pushed batches of 3 x 100 episodes (~680 s each): ~32 min per robot,
#               ~95 min for three (UR5e/Franka assumed as fast as ALOHA: ~6.8 s wall per episode;
#               their collect_*.json wall_s tells).
#   conversion  a few minutes per robot.
#   grounding   ALOHA's (4000 layouts, 1500 steps, 8.3 min), then from it 6000 layouts (2000 per robot),
#               2000 steps: ~20 min.
#   training    (15000 + 9000 + 10000) steps x ~0.22 s/step at batch 32 = ~125 min
#               (the ALOHA recipe: 23000 steps, ~91 min).
#   evaluation  6 x 50 episodes in real time (each robot, and with the prompt swapped): ~60 min.
#   total       about 5 h of wall time, of which ~2.3 h of training compute.
# Seeds: robot k's demonstrations use SEED_BASE = 0, 2000, 3000 (+ [0, 900): clean, pushed, pushed);
#   disjoint from each other and from the evaluation seeds 1000-1049. Grounding layouts 100000..,
#   training and grounding seed 0.
# Usage: tools/make_multirobot_checkpoint.sh [work_dir]
#   env: ROBOTS (default "trossen_bimanual ur5e franka"), OUT (checkpoint directory, default
#        checkpoints/pi0_sim_multi_pick_cube), EPISODES (per collector), COLLECTORS, DART_EPISODES,
#        PRETRAIN_LAYOUTS, PRETRAIN_STEPS (the grounding over all robots), FIRST_PRETRAIN_LAYOUTS,
#        FIRST_PRETRAIN_STEPS (the first robot's grounding it starts from), STEPS, DART_STEPS, FINAL_STEPS, BATCH, LR, FINAL_LR, SAVE_EVERY,
#        EVAL_EPISODES; DOMAIN_BASE, DART_DOMAIN_BASE (collectors' ROS domains, base + i; the robots
#        collect one after the other), EVAL_DOMAIN (ROS domain of the evaluations), PI0_ROS (the pi0-ros command),
#        PYTHON (the venv's python, for the last step)
# Every step whose output is in the work dir already is skipped; training stages resume.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
work=${1:-$here/outputs/proof_multi}
read -ra robots <<< "${ROBOTS:-trossen_bimanual ur5e franka}"
OUT=${OUT:-$here/checkpoints/pi0_sim_multi_pick_cube}
export EPISODES=${EPISODES:-80} COLLECTORS=${COLLECTORS:-3} DART_EPISODES=${DART_EPISODES:-100}
PRETRAIN_LAYOUTS=${PRETRAIN_LAYOUTS:-6000}
PRETRAIN_STEPS=${PRETRAIN_STEPS:-2000}
FIRST_PRETRAIN_LAYOUTS=${FIRST_PRETRAIN_LAYOUTS:-4000}
FIRST_PRETRAIN_STEPS=${FIRST_PRETRAIN_STEPS:-1500}
STEPS=${STEPS:-15000}
DART_STEPS=${DART_STEPS:-9000}
FINAL_STEPS=${FINAL_STEPS:-10000}
BATCH=${BATCH:-32}
LR=${LR:-3e-4}
FINAL_LR=${FINAL_LR:-1e-4}
SAVE_EVERY=${SAVE_EVERY:-1000}
EVAL_EPISODES=${EVAL_EPISODES:-50}
EVAL_DOMAIN=${EVAL_DOMAIN:-${ROS_DOMAIN_ID:-0}}
export ROS_AUTOMATIC_DISCOVERY_RANGE=${ROS_AUTOMATIC_DISCOVERY_RANGE:-LOCALHOST} MUJOCO_GL=${MUJOCO_GL:-egl}
read -ra pi0 <<< "${PI0_ROS:-$here/.venv/bin/pi0-ros}"
read -ra python <<< "${PYTHON:-$here/.venv/bin/python}"
mkdir -p "$work"
# 1-2. Per robot: demonstrations (clean, pushed) through ROS -> datasets, in $work/<robot>
#    (tools/proof_data.sh; no grounding there: one over all robots below).
datasets=() datasets_dart=() datasets_dart2=()
for k in "${!robots[@]}"; do
  r=${robots[$k]}
  base=$((k == 0 ? 0 : 1000 * (k + 1)))
  EMBODIMENT=$r SEED_BASE=$base PRETRAIN_LAYOUTS=0 "$here/tools/proof_data.sh" "$work/$r"
  datasets+=("$work/$r/dataset") datasets_dart+=("$work/$r/dataset_dart") datasets_dart2+=("$work/$r/dataset_dart2")
done
# 3. One VLM grounding, in two steps. (a) The first robot's alone: the ALOHA recipe's own grounding
#    (tools/proof_data.sh's defaults: 4000 layouts, 1500 steps, seed 0); a finished one can be linked in as
#    $work/pretrain_first. (b) From it, all robots: the layouts split evenly, each its own scene and top
#    camera. Straight from random weights, (b) stayed at the mean prediction for 1700 of 2000 steps (loss
#    0.35, 13 cm): the UR5e's and Franka's cubes span ~4 px of their 112 px top-camera image, half of
#    ALOHA's, and the mixture starved the signal ALOHA's grounding breaks through on (at ~300 steps alone).
[ -f "$work/pretrain_first/model.safetensors" ] || "${pi0[@]}" pretrain-vlm --embodiment "${robots[0]}" \
  --out "$work/pretrain_first" --layouts "$FIRST_PRETRAIN_LAYOUTS" --steps "$FIRST_PRETRAIN_STEPS" --seed 0 \
  > "$work/pretrain_first.json"
[ -f "$work/pretrain/model.safetensors" ] || "${pi0[@]}" pretrain-vlm --embodiment "${robots[@]}" \
  --init "$work/pretrain_first" --out "$work/pretrain" --layouts "$PRETRAIN_LAYOUTS" --steps "$PRETRAIN_STEPS" \
  --seed 0 > "$work/pretrain.json"
# 4-6. ONE model, every robot's datasets in each stage (seed 0): the action expert on the clean
#    demonstrations (VLM frozen), then clean + first pushed batch, then all three with the VLM's
#    transformer layers training too (vision tower and prompt embedding frozen).
last() { ls -d "$1"/checkpoints/step_* | sort | tail -1; }
common=(--batch-size "$BATCH" --seed 0 --save-every "$SAVE_EVERY" --log-every 50 --delta-actions --resume)
"${pi0[@]}" train --dataset "${datasets[@]}" --init "$work/pretrain" --freeze-vlm --out "$work/train" \
  --steps "$STEPS" --lr "$LR" --warmup 300 "${common[@]}" | tee "$work/train.json"
"${pi0[@]}" train --dataset "${datasets[@]}" "${datasets_dart[@]}" --init "$(last "$work/train")" --freeze-vlm \
  --out "$work/train_dart" --steps "$DART_STEPS" --lr "$LR" --warmup 200 "${common[@]}" | tee "$work/train_dart.json"
"${pi0[@]}" train --dataset "${datasets[@]}" "${datasets_dart[@]}" "${datasets_dart2[@]}" --init "$(last "$work/train_dart")" \
  --freeze-vision --out "$work/train_final" --steps "$FINAL_STEPS" --lr "$FINAL_LR" --warmup 200 "${common[@]}" \
  | tee "$work/train_final.json"
rm -rf "$OUT" && mkdir -p "$(dirname "$OUT")"
cp -r "$(last "$work/train_final")" "$OUT"
rm -rf "$OUT/train_state"   # optimizer state: only for --resume
cp "$work/train_final/loss.png" "$OUT/" 2>/dev/null || true
# 7-8. Closed-loop evaluation of each robot through the ROS nodes on unseen seeds (1000..), and with the
#    prompt swapped; the settings and results into the checkpoint's inference.json (tools/eval_multirobot.sh).
ROBOTS="${robots[*]}" EVAL_EPISODES=$EVAL_EPISODES EVAL_DOMAIN=$EVAL_DOMAIN PI0_ROS="${pi0[*]}" PYTHON="${python[*]}" \
  "$here/tools/eval_multirobot.sh" "$OUT" "$work"
