"""The sampling pipeline: speed of jbdiff's recipe vs Jukebox-Diffusion v1's, and memory vs length.

Usage::

    python benchmarks/bench_pipeline.py speed  [--model BUNDLE] [--seconds 30] [--json OUT]
    python benchmarks/bench_pipeline.py memory [--model BUNDLE] [--minutes 1,3,10] [--command continue|remix] [--json OUT]

``speed`` continues the example seed by ``--seconds`` twice in one process with the same models:
once with the bundle's own sampling settings (jbdiff's recipe) and once with the ``v1`` preset
(the reference v-sampler, 250 / 70 x 0.33 / 20 x 0.5 / 150 x 0.77 steps, two base windows per
pass). It reports seconds of audio per wall-clock second and, for quality, the same metrics the
evaluation uses, each output against the seed: musicnn tag KL, chroma correlation, key agreement,
seam discontinuity, silent fraction.

``memory`` runs one subprocess per output length, each streaming a continuation (or, with
``--command remix``, a remix of an input file of that length, the example seed repeated) to a
file with one step per stage (memory does not depend on the step count), and reports each
process's peak resident memory above its level once the models are loaded.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from harness import machine_info, peak_mb, rss_mb, write_result

from jbdiff.core.audio import SAMPLE_RATE, load_audio
from jbdiff.core.audio_stream import AudioStreamWriter
from jbdiff.pipeline import Pipeline
from jbdiff.sampling_settings import PRESETS, StageSettings

ROOT = Path(__file__).resolve().parents[1]
SEED = ROOT / "examples" / "knolls_seed.ogg"
RESULTS = Path(__file__).resolve().parent / "results"


def quality(seed: np.ndarray, audio: np.ndarray, seams: list[int]) -> dict[str, float]:
    """Evaluation metrics of a continuation against its seed."""
    from jbdiff.metrics import music as mm
    from jbdiff.metrics.musicnn import tag_probabilities

    seed_chroma, out_chroma = mm.mean_chroma(seed, SAMPLE_RATE), mm.mean_chroma(audio, SAMPLE_RATE)
    return {
        "tag_kl_vs_seed": mm.tag_kl(tag_probabilities(seed, SAMPLE_RATE), tag_probabilities(audio, SAMPLE_RATE)),
        "chroma_correlation_vs_seed": mm.chroma_correlation(seed_chroma, out_chroma),
        "key_agreement_vs_seed": mm.key_agreement(mm.estimate_key(seed_chroma), mm.estimate_key(out_chroma)),
        "seam_discontinuity": mm.seam_discontinuity(audio, SAMPLE_RATE, seams),
        "silent_fraction": mm.silent_fraction(audio, SAMPLE_RATE),
    }


def bench_speed(args: argparse.Namespace) -> dict[str, Any]:
    pipe = Pipeline.from_pretrained(args.model, device=args.device)
    seed = load_audio(SEED, channels=None)
    runs = {}
    for name, settings in (("jbdiff", pipe.settings), ("v1", PRESETS["v1"])):
        started = time.perf_counter()
        result = pipe.continue_(seed, SAMPLE_RATE, args.seconds, settings=settings, progress=True)
        wall = time.perf_counter() - started
        assert result.audio is not None
        runs[name] = {
            "wall_s": round(wall, 2),
            "audio_seconds_per_second": round(args.seconds / wall, 4),
            "timings_s": result.manifest["timings_s"],
            "quality": quality(seed, result.audio, result.seams),
            "settings": result.manifest["settings"],
        }
        print(f"{name:>7}: {wall:8.1f} s for {args.seconds:.0f} s of audio ({args.seconds / wall:.3f} x real time)")
    ratio = runs["jbdiff"]["audio_seconds_per_second"] / runs["v1"]["audio_seconds_per_second"]
    print(f"speed-up: {ratio:.2f}x")
    print(f"{'metric':>28} {'jbdiff':>9} {'v1':>9}")
    for metric in runs["jbdiff"]["quality"]:
        print(f"{metric:>28} {runs['jbdiff']['quality'][metric]:9.3f} {runs['v1']['quality'][metric]:9.3f}")
    return {"seconds": args.seconds, "model": str(pipe.path), "runs": runs, "speedup": round(ratio, 3)}


def _one_length(args: argparse.Namespace) -> None:
    """Child process: stream one continuation and print its memory readings as JSON."""
    pipe = Pipeline.from_pretrained(args.model, device=args.device)
    seed = load_audio(SEED, channels=None)
    one = {name: StageSettings(1, guidance=1.0, init_strength=0.0) for name in ("level2", "level1", "level0", "dance")}
    settings = pipe.settings.replace(**one)
    baseline = rss_mb()
    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        if args.input:
            pipe.remix(args.input, SAMPLE_RATE, 0.5, settings=settings, out=Path(folder) / "out.wav")
        else:
            pipe.continue_(seed, SAMPLE_RATE, args.length * 60, settings=settings, out=Path(folder) / "out.wav")
        wall = time.perf_counter() - started
    print(json.dumps({"minutes": args.length, "baseline_mb": baseline, "peak_mb": peak_mb(), "wall_s": wall}))


def _long_input(path: Path, minutes: float) -> Path:
    """An input of ``minutes`` of music (the example seed repeated), written piece by piece."""
    seed = load_audio(SEED, channels=None)
    total = round(minutes * 60 * SAMPLE_RATE)
    with AudioStreamWriter(path, seed.shape[0], SAMPLE_RATE) as writer:
        for start in range(0, total, seed.shape[-1]):
            writer.write(seed[:, : total - start])
    return path


def bench_memory(args: argparse.Namespace) -> dict[str, Any]:
    rows = []
    for minutes in (float(m) for m in args.minutes.split(",")):
        argv = [sys.executable, __file__, "one-length", "--length", str(minutes), "--device", args.device, "--threads", str(args.threads)]
        argv += ["--model", args.model] if args.model else []
        with tempfile.TemporaryDirectory() as folder:
            if args.command == "remix":
                argv += ["--input", str(_long_input(Path(folder) / "input.wav", minutes))]
            done = subprocess.run(argv, capture_output=True, text=True, check=True)
        row = json.loads(done.stdout.strip().splitlines()[-1])
        row["growth_mb"] = row["peak_mb"] - row["baseline_mb"]
        rows.append(row)
        print(f"{minutes:5.1f} min: peak {row['peak_mb']:7.0f} MB, growth over loaded models {row['growth_mb']:6.0f} MB, {row['wall_s']:6.0f} s")
    ratio = rows[-1]["growth_mb"] / rows[0]["growth_mb"]
    print(f"growth ratio {rows[-1]['minutes']:g} min / {rows[0]['minutes']:g} min: {ratio:.2f}")
    return {"command": args.command, "rows": rows, "growth_ratio_longest_vs_shortest": round(ratio, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=("speed", "memory", "one-length"))
    parser.add_argument("--model", help="model bundle (default: the shipped demo bundle)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seconds", type=float, default=30.0, help="speed: seconds of continuation (default 30)")
    parser.add_argument("--minutes", default="1,3,10", help="memory: output lengths in minutes (default 1,3,10)")
    parser.add_argument("--command", choices=("continue", "remix"), default="continue", help="memory: what to run (default continue)")
    parser.add_argument("--input", help=argparse.SUPPRESS)  # one-length: the remix's input file
    parser.add_argument("--length", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--json", type=Path, help="result file (default: benchmarks/results/pipeline_<what>.json)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.what == "one-length":
        _one_length(args)
        return
    load = os.getloadavg()
    result = bench_speed(args) if args.what == "speed" else bench_memory(args)
    result["machine"] = machine_info(load)
    write_result(args.json or RESULTS / f"pipeline_{args.what}.json", result)


if __name__ == "__main__":
    main()
