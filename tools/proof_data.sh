#!/usr/bin/env bash
# The data of the simulator proof, shared by tools/make_demo_checkpoint.sh (full fine-tuning) and
# tools/make_lora_checkpoint.sh (LoRA): scripted demonstrations recorded through the ROS pipeline
# into rosbags (clean, and with the simulated arms pushed off course, DART-style) -> datasets ->
# the from-scratch `sim` preset's VLM grounding (pretrain-vlm). Every step is skipped when its
# output is already in the work dir, so both recipes train on the same demonstrations and start
# from the same grounded initialisation.
# tools/make_multirobot_checkpoint.sh runs steps 1-2 once per robot (EMBODIMENT, SEED_BASE, its own
# work subdir) with PRETRAIN_LAYOUTS=0, then one grounding over all robots.
# Usage: tools/proof_data.sh work_dir
#   env: EMBODIMENT (default trossen_bimanual), SEED_BASE (first demonstration seed, default 0),
#        EPISODES (per collector), COLLECTORS, DART_EPISODES, PRETRAIN_LAYOUTS (0: no grounding step),
#        PRETRAIN_STEPS, DOMAIN_BASE, DART_DOMAIN_BASE (ROS domains of the collectors: base + i),
#        PI0_ROS (the pi0-ros command; default: the repository's .venv)
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
work=${1:?usage: tools/proof_data.sh work_dir}
EMBODIMENT=${EMBODIMENT:-trossen_bimanual}
SEED_BASE=${SEED_BASE:-0}
EPISODES=${EPISODES:-80}
COLLECTORS=${COLLECTORS:-3}
DART_EPISODES=${DART_EPISODES:-100}
PRETRAIN_LAYOUTS=${PRETRAIN_LAYOUTS:-4000}
PRETRAIN_STEPS=${PRETRAIN_STEPS:-1500}
DOMAIN_BASE=${DOMAIN_BASE:-60}
DART_DOMAIN_BASE=${DART_DOMAIN_BASE:-80}
export ROS_AUTOMATIC_DISCOVERY_RANGE=${ROS_AUTOMATIC_DISCOVERY_RANGE:-LOCALHOST} MUJOCO_GL=${MUJOCO_GL:-egl}
read -ra pi0 <<< "${PI0_ROS:-$here/.venv/bin/pi0-ros}"
mkdir -p "$work"
# Seeds: clean SEED_BASE + [0, 300), pushed SEED_BASE + [300, 600) and SEED_BASE + [600, 900).
if ((COLLECTORS * EPISODES > 300 || 3 * DART_EPISODES > 300)); then
  echo "proof_data.sh: COLLECTORS*EPISODES and 3*DART_EPISODES must be <= 300 (disjoint seed ranges)" >&2
  exit 2
fi
# 1. Demonstrations: COLLECTORS sessions side by side, each on its own ROS domain (the sim runs
#    in real time and one session uses about half a core). Collector i records seeds
#    SEED_BASE + i*EPISODES .. SEED_BASE + (i+1)*EPISODES-1; the seed decides the cube layout and
#    which cube is named.
if [ ! -d "$work/bags_0" ]; then
  pids=()
  for ((i = 0; i < COLLECTORS; i++)); do
    ROS_DOMAIN_ID=$((DOMAIN_BASE + i)) "${pi0[@]}" collect --embodiment "$EMBODIMENT" --episodes "$EPISODES" \
      --seed $((SEED_BASE + i * EPISODES)) --out "$work/bags_$i" --json > "$work/collect_$i.json" 2> "$work/collect_$i.log" &
    pids+=($!)
  done
  for p in "${pids[@]}"; do wait "$p"; done
fi
# 1b. The same expert while the simulator pushes its arms (smooth random offsets between command
#    and joint controller, pi0_ros.sim.disturbance). The bags' commands stay the expert's clean
#    targets, so the policy learns how to get back on course from states a clean demo never
#    visits (DART). Two batches of 3 x DART_EPISODES, one push size (rad) per collector:
#    bags_dart_* (seeds SEED_BASE + 300..599) and bags_dart2_* (SEED_BASE + 600..899).
collect_pushed() {  # name first_seed std...
  local name=$1 first=$2 i=0 pids=()
  shift 2
  [ -d "$work/bags_${name}_0" ] && return 0
  for std in "$@"; do
    ROS_DOMAIN_ID=$((DART_DOMAIN_BASE + i)) "${pi0[@]}" collect --embodiment "$EMBODIMENT" \
      --episodes "$DART_EPISODES" --seed $((SEED_BASE + first + i * DART_EPISODES)) --disturbance "$std" \
      --out "$work/bags_${name}_$i" --json \
      > "$work/collect_${name}_$i.json" 2> "$work/collect_${name}_$i.log" &
    pids+=($!)
    i=$((i + 1))
  done
  for p in "${pids[@]}"; do wait "$p"; done
}
collect_pushed dart 300 0.02 0.03 0.04
collect_pushed dart2 600 0.03 0.04 0.05
# 2. Datasets (successful episodes only; action labels = the recorded commands).
for name in "" _dart _dart2; do
  bags=("$work"/bags_[0-9]*/episode_*)
  [ -n "$name" ] && bags=("$work"/bags${name}_[0-9]*/episode_*)
  [ -d "$work/dataset$name" ] || "${pi0[@]}" bag2dataset "${bags[@]}" --embodiment "$EMBODIMENT" \
    --out "$work/dataset$name" --success-only > "$work/bag2dataset$name.json"
done
# 3. VLM grounding on rendered layouts (seeds 100000..; seed 0), the stand-in for PaliGemma's
#    pre-training: where is the cube the prompt names? (about 9 min)
if ((PRETRAIN_LAYOUTS > 0)) && [ ! -f "$work/pretrain/model.safetensors" ]; then
  "${pi0[@]}" pretrain-vlm --embodiment "$EMBODIMENT" --out "$work/pretrain" --layouts "$PRETRAIN_LAYOUTS" \
    --steps "$PRETRAIN_STEPS" --seed 0 > "$work/pretrain.json"
fi
