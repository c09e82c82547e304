#!/usr/bin/env bash
# The simulator proof of LoRA fine-tuning: the recipe of tools/make_demo_checkpoint.sh with LoRA in
# place of full fine-tuning, on the same demonstrations and from the same grounded initialisation
# (tools/proof_data.sh: reused from the work dir when the full recipe already made them), then
# `pi0-ros merge-lora` and the same closed-loop evaluations through the ROS nodes. Prints the
# success rates, the training time and the peak memory beside the full recipe's (when its results
# are in the work dir).
#
# What trains. The `sim` preset is trained from scratch: after pretrain-vlm the VLM (and vision
# tower) are grounded, but the action expert is still at its random initialisation. It is handled
# as `--lora` handles the real model's pre-trained expert, so this measures the recipe users run
# on the 3.3B model: the expert's base weights stay frozen (here: random), its attention and MLP
# projections learn through rank-32 adapters (alpha 32, openpi's gemma_300m_lora), and the
# state/action/time heads train in full. The stages follow the full recipe:
#   1. clean demonstrations, `--lora --freeze-vlm`: adapters on the action expert only, the VLM
#      frozen (the full recipe: --freeze-vlm);
#   2. clean + first pushed batch, `--lora --freeze-vlm --init <stage 1 adapter>`: the SAME
#      adapters continue (one set of low-rank adapters over all stages, no merge in between);
#   3. all three datasets, `--lora --init <stage 2 adapter>`: the VLM's layers get rank-16
#      adapters too (the full recipe: --freeze-vision, VLM layers in full), lr FINAL_LR.
# The vision tower and the token embedding stay frozen throughout, as in the full recipe's stage 3.
# The result is merged (`pi0-ros merge-lora`) into WORK/lora/checkpoint, a plain checkpoint.
#
# Usage: tools/make_lora_checkpoint.sh [work_dir]        (default: outputs/proof, the full recipe's)
#   env: STEPS, DART_STEPS, FINAL_STEPS, BATCH, LR, FINAL_LR, LORA_RANK, LORA_EXPERT_RANK, EVAL_EPISODES,
#        EVALS (which of the evaluations run: default "eval eval_swapped eval_paper");
#        those of tools/proof_data.sh (EPISODES, COLLECTORS, DART_EPISODES, PRETRAIN_*, *DOMAIN_BASE, PI0_ROS)
#   The evaluations run on $ROS_DOMAIN_ID (EVAL_DOMAIN sets it).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
work=${1:-$here/outputs/proof}
STEPS=${STEPS:-10000}
DART_STEPS=${DART_STEPS:-6000}
FINAL_STEPS=${FINAL_STEPS:-7000}
BATCH=${BATCH:-32}
LR=${LR:-3e-4}
FINAL_LR=${FINAL_LR:-1e-4}
LORA_RANK=${LORA_RANK:-16}
LORA_EXPERT_RANK=${LORA_EXPERT_RANK:-32}
EVAL_EPISODES=${EVAL_EPISODES:-50}
read -ra evals <<< "${EVALS:-eval eval_swapped eval_paper}"
export ROS_AUTOMATIC_DISCOVERY_RANGE=${ROS_AUTOMATIC_DISCOVERY_RANGE:-LOCALHOST} MUJOCO_GL=${MUJOCO_GL:-egl}
[ -n "${EVAL_DOMAIN:-}" ] && export ROS_DOMAIN_ID=$EVAL_DOMAIN
read -ra pi0 <<< "${PI0_ROS:-$here/.venv/bin/pi0-ros}"
lora=$work/lora
mkdir -p "$lora"
t0=$SECONDS
# 1-3. Demonstrations through ROS -> datasets -> VLM grounding: shared with the full recipe.
"$here/tools/proof_data.sh" "$work"
echo "data: $((SECONDS - t0)) s (0 when reused)"
latest() { echo "$1/checkpoints/$(cat "$1/checkpoints/latest")"; }
stage() {  # name, then train arguments; the JSON summary goes to $lora/<name>.json, the wall time to <name>.time
  local name=$1 t=$SECONDS
  shift
  [ -f "$lora/$name.time" ] && return 0  # done in an earlier invocation (an interrupted stage resumes)
  "${pi0[@]}" train --out "$lora/$name" --lora --lora-rank "$LORA_RANK" --lora-alpha "$LORA_RANK" \
    --lora-expert-rank "$LORA_EXPERT_RANK" --lora-expert-alpha "$LORA_EXPERT_RANK" --batch-size "$BATCH" --seed 0 \
    --log-every 50 --delta-actions --resume "$@" | tee "$lora/$name.json"
  echo $((SECONDS - t)) > "$lora/$name.time"
}
# 4. Clean demonstrations; adapters on the action expert, VLM frozen.
stage train --dataset "$work/dataset" --init "$work/pretrain" --freeze-vlm --steps "$STEPS" --lr "$LR" --warmup 300 \
  --save-every 2500
# 5. Clean + first pushed batch; the same adapters continue.
stage train_dart --dataset "$work/dataset" "$work/dataset_dart" --init "$(latest "$lora/train")" --freeze-vlm \
  --steps "$DART_STEPS" --lr "$LR" --warmup 200 --save-every 2000
# 6. All three datasets; the VLM's layers get adapters too.
stage train_final --dataset "$work/dataset" "$work/dataset_dart" "$work/dataset_dart2" \
  --init "$(latest "$lora/train_dart")" --steps "$FINAL_STEPS" --lr "$FINAL_LR" --warmup 200 --save-every 1000
# 7. Merge into a plain checkpoint (no PEFT needed to load it).
rm -rf "$lora/checkpoint"
"${pi0[@]}" merge-lora "$(latest "$lora/train_final")" --out "$lora/checkpoint" > "$lora/merge.json"
cp "$lora/train_final/loss.png" "$lora/checkpoint/"
# 8. The full recipe's closed-loop evaluations, same flags and seeds (1000..), every setting explicit
#    (the merged checkpoint has no inference.json: training writes none).
ev=("${pi0[@]}" eval --checkpoint "$lora/checkpoint" --episodes "$EVAL_EPISODES" --seed 1000 --json)
for name in "${evals[@]}"; do
  case $name in
    eval) flags=(--realtime-chunking --noise-scale 0) ;;
    eval_swapped) flags=(--realtime-chunking --noise-scale 0 --swap-prompt) ;;
    eval_paper) flags=(--no-realtime-chunking --noise-scale 1) ;;
    *) echo "make_lora_checkpoint.sh: unknown evaluation '$name' in EVALS" >&2; exit 2 ;;
  esac
  "${ev[@]}" "${flags[@]}" > "$lora/$name.json"
done
python3 - "$work" <<'EOF'
import json, os, sys
work = sys.argv[1]
lora = os.path.join(work, "lora")
stages = ("train", "train_dart", "train_final")

def load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None

def summary(root):
    runs = [load(os.path.join(root, s + ".json")) for s in stages]
    walls = [load(os.path.join(root, s + ".time")) for s in stages]
    row = {}
    if all(runs):
        row["train s (loop)"] = round(sum(r["train_time_s"] for r in runs))
        row["peak RSS GB"] = max(r["peak_rss_gb"] for r in runs)
        row["trainable"] = " / ".join(f"{r['trainable_parameters'] / 1e6:.2f} M" for r in runs)
        row["last loss"] = runs[-1]["last_loss"] and round(runs[-1]["last_loss"], 4)
    if all(w is not None for w in walls):
        row["train s (wall)"] = sum(walls)
    for name in ("eval", "eval_swapped", "eval_paper"):
        e = load(os.path.join(root, name + ".json"))
        if e is not None:
            row[name] = f"{e['success_rate']:.0%} ({e['successes']}/{e['episodes']})"
    return row

rows = {"lora": summary(lora), "full (make_demo_checkpoint.sh)": summary(work)}
for name, row in rows.items():
    print(f"{name}: " + (", ".join(f"{k} {v}" for k, v in row.items()) or "no results in this work dir"))
EOF
