#!/usr/bin/env bash
# Closed-loop evaluation of one checkpoint on each robot through the ROS nodes, then its inference.json.
#   For each robot: EVAL_EPISODES episodes on the unseen seeds 1000.. with real-time chunking and
#   deterministic sampling (every setting explicit, whatever inference.json says now), then the same
#   with the prompt swapped (--swap-prompt); WORK/eval_<robot>.json and eval_<robot>_swapped.json;
#   a per-robot table. Then the settings of those runs and each robot's result go into the
#   checkpoint's inference.json (no execute_steps: each robot keeps its embodiment's own).
# Used by tools/make_multirobot_checkpoint.sh and tools/make_takeover_checkpoint.sh.
# Usage: tools/eval_multirobot.sh checkpoint work_dir
#   env: ROBOTS (default "trossen_bimanual ur5e franka"), EVAL_EPISODES (50), EVAL_DOMAIN (ROS domain),
#        PI0_ROS (the pi0-ros command), PYTHON (the venv's python), NOTE (a line kept in inference.json)
# An evaluation whose JSON is in the work dir already is skipped. Real time: run nothing else beside it.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
ckpt=${1:?usage: tools/eval_multirobot.sh checkpoint work_dir}
work=${2:?usage: tools/eval_multirobot.sh checkpoint work_dir}
ckpt=$(cd "$ckpt" && pwd)
read -ra robots <<< "${ROBOTS:-trossen_bimanual ur5e franka}"
EVAL_EPISODES=${EVAL_EPISODES:-50}
EVAL_DOMAIN=${EVAL_DOMAIN:-${ROS_DOMAIN_ID:-0}}
export ROS_AUTOMATIC_DISCOVERY_RANGE=${ROS_AUTOMATIC_DISCOVERY_RANGE:-LOCALHOST} MUJOCO_GL=${MUJOCO_GL:-egl}
read -ra pi0 <<< "${PI0_ROS:-$here/.venv/bin/pi0-ros}"
read -ra python <<< "${PYTHON:-$here/.venv/bin/python}"
mkdir -p "$work"
for r in "${robots[@]}"; do
  ev=("${pi0[@]}" eval --checkpoint "$ckpt" --embodiment "$r" --episodes "$EVAL_EPISODES" --seed 1000 --json
      --realtime-chunking --noise-scale 0)
  [ -s "$work/eval_$r.json" ] || ROS_DOMAIN_ID=$EVAL_DOMAIN "${ev[@]}" > "$work/eval_$r.json"
  [ -s "$work/eval_${r}_swapped.json" ] || ROS_DOMAIN_ID=$EVAL_DOMAIN "${ev[@]}" --swap-prompt > "$work/eval_${r}_swapped.json"
done
"${python[@]}" - "$work" "$ckpt" "${ckpt#"$here"/}" "$EVAL_EPISODES" "${NOTE:-}" "${robots[@]}" <<'PY'
import json, sys
from pi0_ros import inference_settings as s
work, ckpt, shown, n, note, robots = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5], sys.argv[6:]
ev = {r: json.load(open(f"{work}/eval_{r}.json")) for r in robots}
sw = {r: json.load(open(f"{work}/eval_{r}_swapped.json")) for r in robots}
first = ev[robots[0]]
print(f"{'robot':<18} {'success':>9} {'rate':>6} {'swapped':>9} {'rate':>6}")
for r in robots:
    print(f"{r:<18} {ev[r]['successes']:>4}/{ev[r]['episodes']:<4} {ev[r]['success_rate']:>6.2f} "
          f"{sw[r]['successes']:>4}/{sw[r]['episodes']:<4} {sw[r]['success_rate']:>6.2f}")
for r in robots:  # how the episodes ended (pi0_ros.sim.grasp_report), e.g. closed_empty = a missed grasp
    print(f"{r:<18} outcomes {ev[r]['outcomes']}, swapped {sw[r]['outcomes']}")
validated = {
    "task": first["task"], "episodes": n, "seeds": f"1000-{1000 + n - 1}",
    "embodiments": {r: {"success_rate": ev[r]["success_rate"], "successes": ev[r]["successes"],
                        "swapped_success_rate": sw[r]["success_rate"]} for r in robots},
    "command": f"pi0-ros eval --checkpoint {shown} --embodiment ROBOT --episodes {n} --seed 1000 "
               "--realtime-chunking --noise-scale 0 --json"}
if note:
    validated["note"] = note
s.write(ckpt, {k: first[k] for k in ("realtime_chunking", "noise_scale", "num_steps")}, validated=validated)
PY
