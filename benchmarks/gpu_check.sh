#!/usr/bin/env bash
# One GPU check for a session with a lent device (under 8 minutes in all); never part of the tests.
#
#   bash benchmarks/gpu_check.sh OUT_DIR [DEVICE]
#
# Writes JSON results (and each part's log) under OUT_DIR ($OUT on the device machine):
#   level_training.json   bench_level_training.py --config full --batch 32 --device cuda
#   unet.json             UNet1d vs UNetV0 at the anchor size: time and memory at 768, 3072, 12288 latents
#   full_pipeline.json    x real time of a 30 s continuation with the full configs (random weights),
#                         peak GPU memory for 1 and 10 minutes
#   summary.json          each part's exit status and seconds
# Each part has its own time limit (GPU_CHECK_LIMITS, seconds: default "150 120 180"), so one that
# hangs cannot take the others' time.
# DEVICE (default cuda) is there to try the script on a CPU at tiny size: see benchmarks/README.md.
set -u
out=${1:?usage: gpu_check.sh OUT_DIR [DEVICE]}
device=${2:-cuda}
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$out"
py=${PYTHON:-python}
if [ "$device" = cuda ]; then
  training=(--config full --batch 32 --device cuda)
  unet=(--batch 1 --device cuda --timeout 100)
  pipeline=(--config full --device cuda --dtype bfloat16 --seconds 30 --minutes 1,10)
  read -r -a limits <<< "${GPU_CHECK_LIMITS:-150 120 180}"  # seconds per part
else  # a quick run of the same parts at tiny size
  training=(--config tiny --batch 2 --device cpu --quick)
  unet=(--quick --batch 1 --device cpu)
  pipeline=(--config tiny --device cpu --seconds 1 --minutes 0.02)
  limits=(300 300 300)
fi
"$py" - <<'EOF' > "$out/device.json" 2>&1 || true
import json, torch
print(json.dumps({"torch": torch.__version__, "cuda": torch.cuda.is_available(),
                  "name": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}))
EOF
summary="{"
part() {  # name, limit, command...
  local name=$1 limit=$2; shift 2
  local start=$SECONDS
  timeout "$limit" "$@" > "$out/$name.log" 2>&1
  local rc=$?
  summary+="\"$name\": {\"rc\": $rc, \"seconds\": $((SECONDS - start))}, "
  echo "$name: exit $rc after $((SECONDS - start)) s"
}
part level_training "${limits[0]}" "$py" "$here/bench_level_training.py" "${training[@]}" --json "$out/level_training.json"
part unet "${limits[1]}" "$py" "$here/bench_unet.py" "${unet[@]}" --json "$out/unet.json"
part full_pipeline "${limits[2]}" "$py" "$here/bench_full_pipeline.py" "${pipeline[@]}" --json "$out/full_pipeline.json"
echo "${summary%, }}" > "$out/summary.json"
cat "$out/summary.json"
