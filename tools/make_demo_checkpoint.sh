#!/usr/bin/env bash
# Reproduce checkpoints/pi0_sim_aloha_pick_cube, the ALOHA-only checkpoint (`make demo` ran it until 2026-12-04):
#   record scripted demonstrations through the ROS pipeline into rosbags (clean, and with the
#   simulated arms pushed off course, DART-style) -> convert to datasets -> give the from-scratch
#   `sim` preset's VLM its visual grounding (pretrain-vlm) -> train the action expert on the clean
#   demonstrations, then on clean + pushed ones, on CPU -> evaluate closed loop through the ROS nodes.
# Usage: tools/make_demo_checkpoint.sh [work_dir]
#   env: EPISODES (per collector), COLLECTORS, DART_EPISODES, STEPS, DART_STEPS, FINAL_STEPS, BATCH, LR,
#        EVAL_EPISODES; those of tools/proof_data.sh (PRETRAIN_*, *DOMAIN_BASE, PI0_ROS)
# tools/make_lora_checkpoint.sh trains the same data from the same grounded init with LoRA.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
work=${1:-$here/outputs/proof}
STEPS=${STEPS:-10000}
BATCH=${BATCH:-32}
LR=${LR:-3e-4}
EVAL_EPISODES=${EVAL_EPISODES:-50}
DART_STEPS=${DART_STEPS:-6000}
FINAL_STEPS=${FINAL_STEPS:-7000}
export ROS_AUTOMATIC_DISCOVERY_RANGE=${ROS_AUTOMATIC_DISCOVERY_RANGE:-LOCALHOST} MUJOCO_GL=${MUJOCO_GL:-egl}
read -ra pi0 <<< "${PI0_ROS:-$here/.venv/bin/pi0-ros}"
mkdir -p "$work"
# 1-3. Demonstrations (clean and pushed) through ROS -> datasets -> VLM grounding (tools/proof_data.sh;
#    each step is skipped when the work dir has its output already).
"$here/tools/proof_data.sh" "$work"
# 4. Train the action expert on the clean demonstrations, VLM frozen (seed 0; about 36 min). Each stage's
#    JSON summary (losses, train_time_s, peak_rss_gb) goes to $work/<stage>.json too.
"${pi0[@]}" train --dataset "$work/dataset" --init "$work/pretrain" --freeze-vlm --out "$work/train" --steps "$STEPS" \
  --batch-size "$BATCH" --lr "$LR" --warmup 300 --seed 0 --save-every 2500 --log-every 50 --delta-actions --resume | tee "$work/train.json"
# 5. Continue on clean + the first pushed batch (mixed n^0.43), VLM still frozen (about 23 min).
last() { ls -d "$1"/checkpoints/step_* | sort | tail -1; }
"${pi0[@]}" train --dataset "$work/dataset" "$work/dataset_dart" --init "$(last "$work/train")" --freeze-vlm \
  --out "$work/train_dart" --steps "$DART_STEPS" --batch-size "$BATCH" --lr "$LR" --warmup 200 --seed 0 \
  --save-every 2000 --log-every 50 --delta-actions --resume | tee "$work/train_dart.json"
# 6. All three datasets; the VLM's transformer layers train too (they make the keys/values the
#    action expert reads), vision tower and prompt embedding frozen (about 32 min).
"${pi0[@]}" train --dataset "$work/dataset" "$work/dataset_dart" "$work/dataset_dart2" --init "$(last "$work/train_dart")" \
  --freeze-vision --out "$work/train_final" --steps "$FINAL_STEPS" --batch-size "$BATCH" --lr 1e-4 --warmup 200 \
  --seed 0 --save-every 1000 --log-every 50 --delta-actions --resume | tee "$work/train_final.json"
ckpt=$(last "$work/train_final")
rm -rf "$here/checkpoints/pi0_sim_aloha_pick_cube" && mkdir -p "$here/checkpoints"
cp -r "$ckpt" "$here/checkpoints/pi0_sim_aloha_pick_cube"
rm -rf "$here/checkpoints/pi0_sim_aloha_pick_cube/train_state"   # optimizer state: only for --resume
cp "$work/train_final/loss.png" "$here/checkpoints/pi0_sim_aloha_pick_cube/"
# 7. Closed-loop evaluation through the ROS nodes on unseen seeds (1000..), with real-time chunking
#    and deterministic sampling (as `make demo` runs it), then the prompt swap, then the paper's plain chunking.
#    Every setting is given explicitly: the checkpoint has no inference.json yet (step 8 writes it).
ev=("${pi0[@]}" eval --checkpoint "$here/checkpoints/pi0_sim_aloha_pick_cube" --episodes "$EVAL_EPISODES" --seed 1000 --json)
"${ev[@]}" --realtime-chunking --noise-scale 0 > "$work/eval.json"
"${ev[@]}" --realtime-chunking --noise-scale 0 --swap-prompt > "$work/eval_swapped.json"
"${ev[@]}" --no-realtime-chunking --noise-scale 1 > "$work/eval_paper.json"
python3 -c "import json; d=json.load(open('$work/eval.json')); print('success rate', d['success_rate'])"
# 8. The settings of the first evaluation, and its result, into the checkpoint's inference.json: the policy
#    node, eval and demo run it with them unless told otherwise (README, Inference settings).
"$here/.venv/bin/python" - "$work/eval.json" "$here/checkpoints/pi0_sim_aloha_pick_cube" "$EVAL_EPISODES" <<'PY'
import json, sys
from pi0_ros import inference_settings as s
ev, ckpt, n = json.load(open(sys.argv[1])), sys.argv[2], int(sys.argv[3])
s.write(ckpt, {k: ev[k] for k in ("realtime_chunking", "noise_scale", "execute_steps", "num_steps")}, validated={
    "embodiment": ev["embodiment"], "task": ev["task"], "success_rate": ev["success_rate"],
    "successes": ev["successes"], "episodes": ev["episodes"], "seeds": f"1000-{1000 + n - 1}",
    "command": f"pi0-ros eval --checkpoint checkpoints/pi0_sim_aloha_pick_cube --episodes {n} --seed 1000 "
               "--realtime-chunking --noise-scale 0 --json"})
PY
