#!/usr/bin/env bash
# Train level-2 base priors on a lent GPU in one call: each config on the same shards, all at
# once on the one device (small UNets leave an H200 mostly idle, so two runs cost little more
# than one), in bf16, for at most MINUTES each; rerunning the same command resumes every run.
#
#   scripts/train_gpu.sh LATENTS VAL_LATENTS RUNS MINUTES [CONFIG ...]
#
#   LATENTS, VAL_LATENTS  level-2 shards of the training and held-out music (`jbdiff encode
#                         --levels 2`, as scripts/train_demo.sh's prior stage writes them)
#   RUNS                  one run folder per config, RUNS/<config name>, and its log beside it
#   MINUTES               training time per run, counted across resumes (as max_steps is): each
#                         stops there or at its config's max_steps, whichever comes first, and
#                         exports its last and best weights; to go on, rerun with a larger MINUTES
#   CONFIG                level-2 YAMLs (default configs/level2/gpu.yaml)
#
# Environment: CODEC (the codec the shards were encoded with; default the demo bundle's),
# PYTHON (python). Export the result with `jbdiff export --half --best --level2 RUNS/NAME ...`.
set -euo pipefail
if [ $# -lt 4 ]; then
  echo "usage: scripts/train_gpu.sh LATENTS VAL_LATENTS RUNS MINUTES [CONFIG ...]" >&2
  exit 2
fi
latents=$1 val=$2 runs=$3 minutes=$4
shift 4
here=$(cd "$(dirname "$0")/.." && pwd)
configs=("$@")
[ ${#configs[@]} -gt 0 ] || configs=("$here/configs/level2/gpu.yaml")
codec=${CODEC:-$here/jbdiff/demo_model}
mkdir -p "$runs"
pids=()
for config in "${configs[@]}"; do
  name=$(basename "$config" .yaml)
  echo "training $name ($config) for at most $minutes min: $runs/$name, log $runs/$name.log"
  OMP_NUM_THREADS=2 "${PYTHON:-python}" -m jbdiff.cli train level2 --latents "$latents" --val-latents "$val" \
    --codec "$codec" --config "$config" --out "$runs/$name" --accelerator gpu --devices 1 \
    --precision bf16-mixed --max-minutes "$minutes" --no-progress > "$runs/$name.log" 2>&1 &
  pids+=($!)
done
status=0
for i in "${!pids[@]}"; do
  if wait "${pids[$i]}"; then
    echo "$(basename "${configs[$i]}" .yaml): done"
  else
    status=1
    echo "$(basename "${configs[$i]}" .yaml): failed, see its log" >&2
  fi
done
exit $status
