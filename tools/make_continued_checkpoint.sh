#!/usr/bin/env bash
# The shipped multi-robot checkpoint trained longer with the vision tower, on new layouts.
#   Why: training the vision tower on the aggregate (tools/make_aggregate_checkpoint.sh) halved the UR5e's
#   early-aim misses and raised its closed loop (README, "The vision tower trained too"); the aggregate's
#   own layouts were the recipe's. Here the same fine-tune continues from the shipped checkpoint on layouts
#   it has never seen, recorded without ROS in lockstep (collect-takeover, which is fast):
#   1. per robot, plain expert demonstrations (--clean-share 1) and expert takeovers from the shipped
#      checkpoint's own trajectories (--clean-share 0: only episodes the policy did not already pick);
#      two collectors side by side, one torch thread each;
#   2. tools/make_aggregate_checkpoint.sh with DATASETS = those, BASE = the shipped checkpoint: everything
#      training (the vision tower included), --delta-actions --keep-norm-stats, then the evaluation.
# Seeds (disjoint from every demonstration, takeover, transfer, evaluation 1000-1049 and validation
#   7000-7049 seed): plain UR5e 20000.., Franka 21000.., ALOHA 22000..; takeovers UR5e 23000.., Franka 24000...
# CPU budget (the 2-core box, nothing else running), stated before the run: collection ~25 min;
#   training STEPS x ~0.42 s (5000: 35 min); evaluation as in make_aggregate_checkpoint.sh.
# Measured 2026-12-04 (README, "Trained longer on new layouts"): collection 23 min, training 19 min (0.23 s/step).
#   diagnose-grasp over 250 layouts: UR5e 82 -> 88 %, Franka 76 -> 79 %, ALOHA unchanged (100 layouts); through
#   ROS on seeds 1000-1049 no better than the shipped file (UR5e 38/50, Franka 41/50, ALOHA 45/50 in real time),
#   so it was not published.
# Usage: tools/make_continued_checkpoint.sh [work_dir]     (default outputs/continued)
#   env: PLAIN ("ur5e=300 franka=300 trossen_bimanual=100"), TAKEOVER ("ur5e=300 franka=300"), PARALLEL (2),
#        and make_aggregate_checkpoint.sh's (BASE, STEPS default 5000, LR, BATCH, EVAL, OUT, ...)
# Every dataset already in the work dir is kept; training resumes.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
work=${1:-$here/outputs/continued}
export BASE=${BASE:-$here/checkpoints/pi0_sim_multi_pick_cube} STEPS=${STEPS:-5000}
export MUJOCO_GL=${MUJOCO_GL:-egl}
read -ra pi0 <<< "${PI0_ROS:-$here/.venv/bin/pi0-ros}"
PARALLEL=${PARALLEL:-2}
declare -A plain_seed=([ur5e]=20000 [franka]=21000 [trossen_bimanual]=22000) takeover_seed=([ur5e]=23000 [franka]=24000)
mkdir -p "$work"
[ -f "$work/base/model.safetensors" ] || cp -r "$BASE" "$work/base"
jobs_=() datasets=()
run() {  # name seed episodes clean_share robot
  [ -n "$2" ] || { echo "make_continued_checkpoint.sh: no seed for $5 (robots: ur5e franka trossen_bimanual)" >&2; exit 2; }
  datasets+=("$work/$1")
  [ -f "$work/$1/meta/info.json" ] && return 0
  OMP_NUM_THREADS=1 "${pi0[@]}" collect-takeover --checkpoint "$work/base" --embodiment "$5" --episodes "$3" \
    --seed "$2" --clean-share "$4" --out "$work/$1" --json > "$work/$1.json" 2> "$work/$1.log" &
  jobs_+=($!)
  if ((${#jobs_[@]} >= PARALLEL)); then wait "${jobs_[0]}"; jobs_=("${jobs_[@]:1}"); fi
}
for kv in ${PLAIN:-ur5e=300 franka=300 trossen_bimanual=100}; do
  r=${kv%%=*}; run "plain_$r" "${plain_seed[$r]:-}" "${kv#*=}" 1 "$r"
done
for kv in ${TAKEOVER:-ur5e=300 franka=300}; do
  r=${kv%%=*}; run "takeover_$r" "${takeover_seed[$r]:-}" "${kv#*=}" 0 "$r"
done
for p in "${jobs_[@]}"; do wait "$p"; done
NOTE="the shipped multi-robot checkpoint trained longer with the vision tower on new layouts (tools/make_continued_checkpoint.sh)" \
  BASE=$work/base DATASETS="${datasets[*]}" "$here/tools/make_aggregate_checkpoint.sh" "$work"
