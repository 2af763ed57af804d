#!/usr/bin/env bash
# Build jbdiff's demo model bundle (jbdiff/demo_model/) from nothing, resuming where it stopped.
#
#   scripts/train_demo.sh                        # the CPU recipe the shipped bundle was built with
#   CODEC_STEPS=20000 LEVEL_STEPS=50000 DANCE_STEPS=30000 LEVEL_SECONDS=0 THREADS=8 \
#     TRAIN_ARGS="--accelerator gpu" scripts/train_demo.sh   # a longer run on a GPU (same sizes)
#
# Stages (each skipped when its run folder already holds a checkpoint at the requested step,
# otherwise resumed from that checkpoint; intermediate files all live under $RUN, gitignored):
#   1. corpus     apt-get install wesnoth-1.16-music (GPL-2+), unless already installed
#   2. split      $RUN/train_audio/ and $RUN/heldout_audio/ (symlinks; scripts/demo_split.py):
#                 the stingers victory, victory2, defeat, defeat2, silence left out; the_deep_path,
#                 traveling_minstrels, knolls, elvish-theme, weight_of_revenge held out, never
#                 trained on. $RUN/level_audio/ = what the latent levels train on: a
#                 LEVEL_SECONDS-long mono excerpt from the middle of every training track
#                 (LEVEL_SECONDS=0: the whole training tracks)
#   3. codec      jbdiff train codec (configs/codec/tiny.yaml) on train_audio, CODEC_STEPS
#      dance      jbdiff train dance (configs/dance/tiny.yaml) on train_audio, DANCE_STEPS;
#                 it needs no codec, so it runs alongside the codec (at a lower priority)
#   4. encode     jbdiff encode level_audio with the codec (a rerun encodes only new files)
#   5. levels     jbdiff train level1|level0 (tiny configs) from the shards, LEVEL1_STEPS /
#                 LEVEL0_STEPS (default LEVEL_STEPS), both at once
#   5b. prior     the level-2 base prior, on far more music: scripts/prior_corpus.py gathers
#                 free game music from ten Debian packages (PRIOR_INSTALL=1: apt-get installs
#                 them) into $RUN/prior_audio/ (whole tracks, about 11 h) and
#                 $RUN/prior_val_audio/ (five files kept out for validation); jbdiff encode
#                 --levels 2 encodes only level 2 (24-30x faster than all levels); jbdiff train level2
#                 (configs/level2/demo.yaml) with --val-latents, LEVEL2_STEPS, one process;
#                 or, with PRIOR_GPU_MINUTES set, scripts/train_gpu.sh (configs/level2/gpu.yaml,
#                 bf16) for that many minutes on a GPU, into $RUN/prior_gpu/gpu: the shipped
#                 bundle's prior (model card: 5.9 min on an H200)
#   6. export     jbdiff export --half --best into $BUNDLE (float16 diffusion stages, float32
#                 codec; each validated run's best checkpoint by held-out loss), with
#                 configs/sampling/demo.yaml as the bundle's recommended sampling settings
#   7. eval       jbdiff eval codec on heldout_audio -> $BUNDLE/eval_codec.json
#
# Environment: RUN (runs/demo), BUNDLE (jbdiff/demo_model), THREADS (torch threads per training
# process, 1: the CPU is shared), ENCODE_THREADS (torch threads for encode; default THREADS),
# TRAIN_ARGS (extra options for every `jbdiff train`, e.g.
# "--accelerator gpu"), DEVICE (encode/eval device, auto), EVAL_SECONDS (seconds per held-out
# track, 30). Logs: $RUN/logs/STAGE.log; wall time of every stage run: $RUN/logs/times.tsv.
set -euo pipefail

cd "$(dirname "$0")/.."
RUN=${RUN:-runs/demo}
BUNDLE=${BUNDLE:-jbdiff/demo_model}
MUSIC=/usr/share/games/wesnoth/1.16/data/core/music
CODEC_STEPS=${CODEC_STEPS:-1000}
LEVEL_STEPS=${LEVEL_STEPS:-1200}
LEVEL2_STEPS=${LEVEL2_STEPS:-6000}  # the shipped prior: the best by validation loss, step 6000 (model card: its schedule)
PRIOR_INSTALL=${PRIOR_INSTALL:-0}
PRIOR_GPU_MINUTES=${PRIOR_GPU_MINUTES:-}
LEVEL1_STEPS=${LEVEL1_STEPS:-$LEVEL_STEPS}
LEVEL0_STEPS=${LEVEL0_STEPS:-$LEVEL_STEPS}
DANCE_STEPS=${DANCE_STEPS:-1500}
LEVEL_SECONDS=${LEVEL_SECONDS:-40}
THREADS=${THREADS:-1}
ENCODE_THREADS=${ENCODE_THREADS:-$THREADS}
TRAIN_ARGS=${TRAIN_ARGS:-}
DEVICE=${DEVICE:-auto}
EVAL_SECONDS=${EVAL_SECONDS:-30}
export OMP_NUM_THREADS=$THREADS MKL_NUM_THREADS=$THREADS
LOGS=$RUN/logs
mkdir -p "$LOGS"

say() { echo "[train_demo $(date +%H:%M:%S)] $*"; }

# The global step stored in RUN_DIR/checkpoints/last.ckpt (0 when there is none), read
# weights-only like every checkpoint jbdiff opens.
trained_steps() {
    local ckpt=$1/checkpoints/last.ckpt
    [[ -f $ckpt ]] || { echo 0; return; }
    python -c $'import sys\nfrom pathlib import Path\nfrom jbdiff.core.errors import JbdiffError\nfrom jbdiff.core.training import checkpoint_step\ntry:\n    print(checkpoint_step(Path(sys.argv[1])))\nexcept JbdiffError as err:\n    sys.exit(f"train_demo: {err}")' "$ckpt"
}

# train STAGE STEPS ARGS...: run `jbdiff train STAGE ARGS... --max-steps STEPS` unless done
# (at niceness $NICE when set).
train() {
    local stage=$1 steps=$2; shift 2
    local have; have=$(trained_steps "$RUN/$stage")
    if (( have >= steps )); then
        say "$stage: already trained ($have >= $steps steps)"
        return
    fi
    say "$stage: training from step $have to $steps (log: $LOGS/$stage.log)"
    local start=$SECONDS
    # shellcheck disable=SC2086  # TRAIN_ARGS is a list of options
    nice -n "${NICE:-0}" jbdiff train "$stage" "$@" --out "$RUN/$stage" --max-steps "$steps" $TRAIN_ARGS >>"$LOGS/$stage.log" 2>&1
    printf '%s\t%s\t%s\t%s\n' "$stage" "$have" "$steps" "$((SECONDS - start))" >>"$LOGS/times.tsv"
    say "$stage: done in $((SECONDS - start)) s"
}

# 1. corpus
if [[ ! -f $MUSIC/knolls.ogg ]]; then
    say "installing wesnoth-1.16-music (147 MB)"
    apt-get install -y --no-install-recommends wesnoth-1.16-music
fi

# 2. split
python scripts/demo_split.py "$MUSIC" "$RUN" --excerpt-seconds "$LEVEL_SECONDS"

# 3. codec, with the Dance stage alongside
NICE=10 train dance "$DANCE_STEPS" --data "$RUN/train_audio" --config configs/dance/tiny.yaml &
dance_pid=$!
train codec "$CODEC_STEPS" --data "$RUN/train_audio" --config configs/codec/tiny.yaml

# 4. encode. Latents and level runs made with an earlier state of the codec (a codec trained
# further since) no longer fit it: they are removed and redone.
python - "$RUN" <<'PY'
import json, shutil, sys
from pathlib import Path
import yaml
run = Path(sys.argv[1])
codec = yaml.safe_load((run / "codec" / "codec.yaml").read_text())["fingerprint"]
for latents in ("latents", "prior_latents", "prior_val_latents"):
    manifest = run / latents / "manifest.json"
    if manifest.is_file() and json.loads(manifest.read_text())["codec_fingerprint"] != codec:
        print(f"removing {run / latents}: encoded with an earlier state of the codec")
        shutil.rmtree(run / latents)
for folder, level in (("level2", "level2"), ("prior_gpu/gpu", "level2"), ("level1", "level1"), ("level0", "level0")):
    stage = run / folder / f"{level}.yaml"  # level2 and prior_gpu/gpu: trained on prior_latents
    if stage.is_file() and yaml.safe_load(stage.read_text())["codec_fingerprint"] != codec:
        print(f"removing {run / folder}: trained on latents of an earlier state of the codec")
        shutil.rmtree(run / folder)
PY
say "encoding $RUN/level_audio (log: $LOGS/encode.log)"
start=$SECONDS
OMP_NUM_THREADS=$ENCODE_THREADS MKL_NUM_THREADS=$ENCODE_THREADS \
    jbdiff encode "$RUN/level_audio" --codec "$RUN/codec" --out "$RUN/latents" --device "$DEVICE" --no-progress >>"$LOGS/encode.log" 2>&1
printf 'encode\t-\t-\t%s\n' "$((SECONDS - start))" >>"$LOGS/times.tsv"
tail -n 1 "$LOGS/encode.log"

# 5. the two upsampler levels, at the same time
pids=()
for level in level1 level0; do
    steps_var=${level^^}_STEPS
    train "$level" "${!steps_var}" --latents "$RUN/latents" --config "configs/$level/tiny.yaml" &
    pids+=($!)
done

# 5b. the base prior: its corpus, level-2 latents, validated training (alongside the upsamplers)
install=(); (( PRIOR_INSTALL )) && install=(--install)
python scripts/prior_corpus.py "$RUN" "${install[@]}"
for corpus in prior_audio prior_val_audio; do
    latents=${corpus/audio/latents}
    OMP_NUM_THREADS=$ENCODE_THREADS MKL_NUM_THREADS=$ENCODE_THREADS \
        jbdiff encode "$RUN/$corpus" --codec "$RUN/codec" --out "$RUN/$latents" --levels 2 --device "$DEVICE" --no-progress >>"$LOGS/encode_prior.log" 2>&1
done
tail -n 2 "$LOGS/encode_prior.log"
if [[ -n $PRIOR_GPU_MINUTES ]]; then
    say "level2: up to $PRIOR_GPU_MINUTES min on the GPU (log: $RUN/prior_gpu/gpu.log)"
    CODEC=$RUN/codec scripts/train_gpu.sh "$RUN/prior_latents" "$RUN/prior_val_latents" "$RUN/prior_gpu" "$PRIOR_GPU_MINUTES" configs/level2/gpu.yaml
    level2_run=$RUN/prior_gpu/gpu
else
    train level2 "$LEVEL2_STEPS" --latents "$RUN/prior_latents" --val-latents "$RUN/prior_val_latents" --config configs/level2/demo.yaml
    level2_run=$RUN/level2
fi
for pid in "${pids[@]}" "$dance_pid"; do
    wait "$pid"
done

# 6. export
jbdiff export --codec "$RUN/codec" --level2 "$level2_run" --level1 "$RUN/level1" --level0 "$RUN/level0" \
    --dance "$RUN/dance" --out "$BUNDLE" --half --best --overwrite --sampling configs/sampling/demo.yaml \
    --data-note "level 2: free game music from ten Debian packages (scripts/prior_corpus.py, $RUN/prior_corpus.json); codec, levels 1 and 0, Dance: Wesnoth 1.16 music (GPL-2+), 31 tracks; held out: the_deep_path, traveling_minstrels, knolls, elvish-theme, weight_of_revenge"
chmod 644 "$BUNDLE"/*  # exported files are private (0600); the package must be readable by all
du -sh "$BUNDLE"

# 7. held-out codec evaluation
jbdiff eval codec --codec "$BUNDLE" --data "$RUN/heldout_audio" --seconds "$EVAL_SECONDS" --device "$DEVICE" \
    --no-progress --json "$BUNDLE/eval_codec.json" | tee "$LOGS/eval_codec.log"
say "bundle ready in $BUNDLE"
