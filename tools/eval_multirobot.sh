#!/usr/bin/env bash
# Closed-loop evaluation of one checkpoint on each robot through the ROS nodes, then its inference.json.
#   For each robot: EVAL_EPISODES episodes on the unseen seeds 1000.. with real-time chunking and
#   deterministic sampling (every setting explicit, whatever inference.json says now), then the same
#   with the prompt swapped (--swap-prompt); WORK/eval_<robot>.json and eval_<robot>_swapped.json.
#   With LOCKSTEP=1 (default) both runs are repeated with --lockstep (WORK/eval_<robot>_lockstep.json,
#   eval_<robot>_swapped_lockstep.json): the simulator pauses while the policy infers, so that figure
#   measures the policy and not this computer's speed or load; the real-time one includes both.
#   A per-robot table. Then the settings of those runs and each robot's results go into the
#   checkpoint's inference.json (no execute_steps: each robot keeps its embodiment's own).
# Used by tools/make_multirobot_checkpoint.sh and tools/make_takeover_checkpoint.sh.
# Usage: tools/eval_multirobot.sh checkpoint work_dir
#   env: ROBOTS (default "trossen_bimanual ur5e franka"), EVAL_EPISODES (50), EVAL_DOMAIN (ROS domain),
#        LOCKSTEP (1: also the lockstep runs; 0: real time only),
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
LOCKSTEP=${LOCKSTEP:-1}
export ROS_AUTOMATIC_DISCOVERY_RANGE=${ROS_AUTOMATIC_DISCOVERY_RANGE:-LOCALHOST} MUJOCO_GL=${MUJOCO_GL:-egl}
read -ra pi0 <<< "${PI0_ROS:-$here/.venv/bin/pi0-ros}"
read -ra python <<< "${PYTHON:-$here/.venv/bin/python}"
modes=("")
[ "$LOCKSTEP" = 1 ] && modes+=(_lockstep)
mkdir -p "$work"
for r in "${robots[@]}"; do
  for m in "${modes[@]}"; do
    ev=("${pi0[@]}" eval --checkpoint "$ckpt" --embodiment "$r" --episodes "$EVAL_EPISODES" --seed 1000 --json
        --realtime-chunking --noise-scale 0)
    [ -n "$m" ] && ev+=(--lockstep)
    [ -s "$work/eval_$r$m.json" ] || ROS_DOMAIN_ID=$EVAL_DOMAIN "${ev[@]}" > "$work/eval_$r$m.json"
    [ -s "$work/eval_${r}_swapped$m.json" ] || ROS_DOMAIN_ID=$EVAL_DOMAIN "${ev[@]}" --swap-prompt > "$work/eval_${r}_swapped$m.json"
  done
done
"${python[@]}" - "$work" "$ckpt" "${ckpt#"$here"/}" "$EVAL_EPISODES" "${NOTE:-}" "$LOCKSTEP" "${robots[@]}" <<'PY'
import json, sys
from pi0_ros import inference_settings as s
work, ckpt, shown, n, note, lockstep, robots = (sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5],
                                                sys.argv[6] == "1", sys.argv[7:])
load = lambda name: json.load(open(f"{work}/{name}.json"))
ev = {r: load(f"eval_{r}") for r in robots}
sw = {r: load(f"eval_{r}_swapped") for r in robots}
ls = {r: load(f"eval_{r}_lockstep") for r in robots} if lockstep else {}
lsw = {r: load(f"eval_{r}_swapped_lockstep") for r in robots} if lockstep else {}
first = ev[robots[0]]
cell = lambda d: f"{d['successes']:>4}/{d['episodes']:<4} {d['success_rate']:>5.2f}"
print(f"{'robot':<18} {'real time':>15} {'swapped':>15}" + (f" {'lockstep':>15} {'swapped':>15}" if lockstep else ""))
for r in robots:
    print(f"{r:<18} {cell(ev[r]):>15} {cell(sw[r]):>15}" + (f" {cell(ls[r]):>15} {cell(lsw[r]):>15}" if lockstep else ""))
for r in robots:  # how the episodes ended (pi0_ros.sim.grasp_report), e.g. closed_empty = a missed grasp
    print(f"{r:<18} outcomes {ev[r]['outcomes']}, swapped {sw[r]['outcomes']}")
    if lockstep:
        print(f"{'':<18} lockstep {ls[r]['outcomes']}, swapped {lsw[r]['outcomes']}")
embodiments = {}
for r in robots:
    e = {"success_rate": ev[r]["success_rate"], "successes": ev[r]["successes"],
         "swapped_success_rate": sw[r]["success_rate"]}
    if lockstep:
        e.update(lockstep_success_rate=ls[r]["success_rate"], lockstep_swapped_success_rate=lsw[r]["success_rate"])
    embodiments[r] = e
validated = {
    "task": first["task"], "episodes": n, "seeds": f"1000-{1000 + n - 1}", "embodiments": embodiments,
    "command": f"pi0-ros eval --checkpoint {shown} --embodiment ROBOT --episodes {n} --seed 1000 "
               "--realtime-chunking --noise-scale 0 --json" + (" [--lockstep]" if lockstep else "")}
if note:
    validated["note"] = note
s.write(ckpt, {k: first[k] for k in ("realtime_chunking", "noise_scale", "num_steps")}, validated=validated)
PY
