#!/usr/bin/env bash
# The transfer experiment of issue 17, in miniature: does pre-training on three robots help a new
# task learn from few demonstrations?
#   New task: stack_cube ("put the red cube on the blue cube"; pi0_ros/sim/stack_task.py), on ONE
#   robot (ROBOT). Its scripted expert records demonstrations through the ROS pipeline into bags
#   (seeds DEMO_SEED.., disjoint from every pick seed and from the evaluation seeds); the first N
#   successful ones become the dataset of size N. For each N in NS the same training runs twice,
#   same steps, learning rate, batch and seed:
#     (a) --init MULTI     the multi-robot pick checkpoint (tools/make_multirobot_checkpoint.sh)
#     (b) --init GROUNDED  the grounded initialisation alone (that recipe's pretrain-vlm output:
#                          the VLM knows where a named cube is; the action expert is random)
#   and each result runs 50 closed-loop episodes of stack_cube through the ROS nodes (seeds
#   1000-1049: the pick evaluation's layouts, never a stacking demonstration's), real-time chunking,
#   zero noise. The script prints success vs N for (a) and (b) and writes WORK/results.json.
# Both runs train the VLM's transformer layers and the expert (--freeze-vision): the stacking prompt
# is new text to either model, so a frozen VLM would leave (b) no way to read it.
#
# CPU budget (defaults, the 2-core box): collection 2 collectors x 40 episodes of 7.2 s side by side
# (~6 min); per N and init 3000 steps x ~0.22 s (~11 min) + 50 episodes of 8 s (~10 min):
# 2 N x 2 inits ~ 85 min; about 1.5 h in all.
# Usage: tools/make_transfer_experiment.sh [work_dir]     (default outputs/transfer)
#   env: ROBOT (default ur5e), TASK (stack_cube), NS ("10 30"), MULTI, GROUNDED, DEMO_SEED (5000),
#        COLLECTORS (2), DEMO_EPISODES (per collector, 40), STEPS (3000), BATCH (32), LR (3e-4),
#        EVAL_EPISODES (50), DOMAIN_BASE (collectors' ROS domains, base + i), EVAL_DOMAIN, PI0_ROS, PYTHON,
#        DATA_ONLY (1: only steps 1-2, which need no checkpoint, e.g. while the multi-robot one trains)
# Every step whose output is in the work dir already is skipped; training resumes.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
work=${1:-$here/outputs/transfer}
ROBOT=${ROBOT:-ur5e}
TASK=${TASK:-stack_cube}
read -ra ns <<< "${NS:-10 30}"
MULTI=${MULTI:-$here/checkpoints/pi0_sim_multi_pick_cube}
GROUNDED=${GROUNDED:-$here/outputs/proof_multi/pretrain}
DEMO_SEED=${DEMO_SEED:-5000}
COLLECTORS=${COLLECTORS:-2}
DEMO_EPISODES=${DEMO_EPISODES:-40}
STEPS=${STEPS:-3000}
BATCH=${BATCH:-32}
LR=${LR:-3e-4}
EVAL_EPISODES=${EVAL_EPISODES:-50}
DOMAIN_BASE=${DOMAIN_BASE:-90}
EVAL_DOMAIN=${EVAL_DOMAIN:-${ROS_DOMAIN_ID:-0}}
export ROS_AUTOMATIC_DISCOVERY_RANGE=${ROS_AUTOMATIC_DISCOVERY_RANGE:-LOCALHOST} MUJOCO_GL=${MUJOCO_GL:-egl}
read -ra pi0 <<< "${PI0_ROS:-$here/.venv/bin/pi0-ros}"
read -ra python <<< "${PYTHON:-$here/.venv/bin/python}"
DATA_ONLY=${DATA_ONLY:-0}
for ckpt in "$MULTI" "$GROUNDED"; do
  [ "$DATA_ONLY" = 1 ] && break
  [ -f "$ckpt/model.safetensors" ] || { echo "make_transfer_experiment.sh: no checkpoint at $ckpt" >&2; exit 2; }
done
# A seed decides the layout for every task, so no demonstration may share an evaluation seed.
if ((DEMO_SEED < 1000 + EVAL_EPISODES && DEMO_SEED + COLLECTORS * DEMO_EPISODES > 1000)); then
  echo "make_transfer_experiment.sh: demonstration seeds must stay clear of the evaluation seeds" \
    "1000-$((1000 + EVAL_EPISODES - 1))" >&2
  exit 2
fi
mkdir -p "$work"
# 1. Demonstrations of the new task through ROS, COLLECTORS sessions side by side (own ROS domains).
if [ ! -d "$work/bags_0" ]; then
  pids=()
  for ((i = 0; i < COLLECTORS; i++)); do
    ROS_DOMAIN_ID=$((DOMAIN_BASE + i)) "${pi0[@]}" collect --embodiment "$ROBOT" --task "$TASK" \
      --episodes "$DEMO_EPISODES" --seed $((DEMO_SEED + i * DEMO_EPISODES)) --out "$work/bags_$i" --json \
      > "$work/collect_$i.json" 2> "$work/collect_$i.log" &
    pids+=($!)
  done
  for p in "${pids[@]}"; do wait "$p"; done
fi
# 2. Dataset of size N: the first N successful demonstrations in seed order (nested: N=10 is a
#    subset of N=30, so the curve measures more data, not other data).
for n in "${ns[@]}"; do
  [ -d "$work/dataset_$n" ] && continue
  mapfile -t bags < <("${python[@]}" - "$work" "$COLLECTORS" "$n" <<'PY'
import json, os, sys
work, collectors, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
ok = []
for i in range(collectors):
    rec = json.load(open(os.path.join(work, f"collect_{i}.json")))["recording"]
    ok += [os.path.join(rec["out_dir"], e["bag"]) for e in rec["episodes"] if e["success"]]
if len(ok) < n:
    sys.exit(f"only {len(ok)} successful demonstrations for N={n}: raise DEMO_EPISODES")
print("\n".join(ok[:n]))
PY
  )
  "${pi0[@]}" bag2dataset "${bags[@]}" --embodiment "$ROBOT" --out "$work/dataset_$n" --success-only --quiet \
    > "$work/bag2dataset_$n.json"
done
[ "$DATA_ONLY" = 1 ] && exit 0
# 3-4. Per N: (a) from the multi-robot checkpoint, (b) from the grounded initialisation; then eval.
last() { ls -d "$1"/checkpoints/step_* | sort | tail -1; }
for n in "${ns[@]}"; do
  for init in multi grounded; do
    src=$MULTI
    [ "$init" = grounded ] && src=$GROUNDED
    run=$work/train_${init}_$n
    if [ ! -f "$run.json" ]; then
      "${pi0[@]}" train --dataset "$work/dataset_$n" --init "$src" --freeze-vision --out "$run" --steps "$STEPS" \
        --lr "$LR" --warmup 200 --batch-size "$BATCH" --seed 0 --save-every 1000 --log-every 50 --delta-actions \
        --resume > "$run.json.tmp" && mv "$run.json.tmp" "$run.json"
    fi
    ev=$work/eval_${init}_$n.json   # written whole or not at all, so a rerun never skips a broken one
    [ -f "$ev" ] || { ROS_DOMAIN_ID=$EVAL_DOMAIN "${pi0[@]}" eval --checkpoint "$(last "$run")" \
      --embodiment "$ROBOT" --task "$TASK" --episodes "$EVAL_EPISODES" --seed 1000 --realtime-chunking \
      --noise-scale 0 --json > "$ev.tmp" && mv "$ev.tmp" "$ev"; }
  done
done
# 5. The curve.
"${python[@]}" - "$work" "$ROBOT" "$TASK" "${ns[@]}" <<'PY'
import json, os, sys
work, robot, task, ns = sys.argv[1], sys.argv[2], sys.argv[3], [int(n) for n in sys.argv[4:]]
rows = {}
print(f"{task} on {robot}: closed-loop success on unseen layouts (seeds 1000..) vs N demonstrations")
print(f"{'N':>4} {'(a) multi-robot init':>22} {'(b) grounded init':>20}")
for n in ns:
    e = {i: json.load(open(os.path.join(work, f"eval_{i}_{n}.json"))) for i in ("multi", "grounded")}
    # reached_*: a gripper touched the cube the prompt moves / the other one
    rows[n] = {i: {k: r[k] for k in ("success_rate", "successes", "episodes", "reached_target_rate",
                                     "reached_other_rate")} for i, r in e.items()}
    print(f"{n:>4} " + " ".join(f"{r['successes']:>14}/{r['episodes']:<3} {r['success_rate']:>4.0%}"
                                 for r in e.values()))
json.dump({"robot": robot, "task": task, "curve": rows}, open(os.path.join(work, "results.json"), "w"), indent=1)
PY
