"""CPU speed of the README main job, this checkout against an earlier revision, back to back.

Usage::

    python benchmarks/bench_speed.py [--baseline REV] [--seconds 20] [--repeat 1] [--threads 2]
                                     [--variant NAME='OPTIONS' ...] [--options 'OPTIONS'] [--json OUT]

Each run is ``jbdiff continue examples/knolls_seed.ogg --seconds N`` in a fresh Python process
(what a user's run costs, model loading included in the wall time but not in the sampling time).
The baseline runs from a ``git worktree`` of ``REV`` (made in a temporary folder and removed after),
the current code from this checkout, turn by turn (``--repeat`` rounds), so both see the same
load. ``--variant`` adds runs of this checkout with more ``jbdiff continue`` options (levers:
``bf16='--dtype bfloat16'``, ``dpm3='--sampler dpm3 --steps 2=16'``, ...); ``--options`` go to every run.

Printed per run: sampling time and x real time of each stage (the manifest's ``timings_s``;
``codec`` is the decoding and re-encoding between levels), the fraction of this CPU's bf16 matmul
bound that the whole job reaches (``--gflop-per-second-of-audio``, default the issue's 117 measured
with torch's flop counter, over ``--peak-gflops``), the load average, and the metrics of the
continuation against its seed (a held-out track), computed by this checkout's code for every run:
musicnn tag KL, chroma correlation, key agreement, seam discontinuity, silent fraction.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench_pipeline import SEED, quality
from harness import machine_info, write_result

from jbdiff.core.audio import SAMPLE_RATE, load_audio

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results"
STAGES = ("level2", "level1", "level0", "dance", "codec")


def run_job(tree: Path, seconds: float, options: list[str], out: Path, threads: int) -> dict[str, Any]:
    """``jbdiff continue`` with the code of ``tree`` in a fresh process: its manifest, wall time and load."""
    env = {**os.environ, "PYTHONPATH": str(tree), "OMP_NUM_THREADS": str(threads)}
    argv = [sys.executable, "-c", "from jbdiff.cli import main; main()", "continue", str(SEED), "--seconds", str(seconds), "-o", str(out), *options]
    load = os.getloadavg()[0]
    started = time.perf_counter()
    done = subprocess.run(argv, cwd=tree, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - started
    if done.returncode:
        return {"error": (done.stderr.strip().splitlines() or ["no output"])[-1], "process_wall_s": wall, "load_before": load}
    manifest = json.loads(out.with_suffix(".json").read_text())
    return {"manifest": manifest, "process_wall_s": wall, "load_before": load, "load_after": os.getloadavg()[0]}


def summarise(name: str, runs: list[dict[str, Any]], seconds: float, gflop: float, peak: float) -> dict[str, Any]:
    """Median stage times over the runs of one side, with metrics of the first run's audio."""
    timings = {stage: statistics.median(r["manifest"]["timings_s"].get(stage, 0.0) for r in runs) for stage in STAGES}
    sampling = statistics.median(sum(r["manifest"]["timings_s"].values()) for r in runs)
    return {
        "name": name,
        "runs": len(runs),
        "sampling_s": sampling,
        "x_realtime": seconds / sampling,
        "stage_s": timings,
        "stage_x_realtime": {stage: (seconds / t if t else None) for stage, t in timings.items()},
        "fraction_of_bound": seconds * gflop / sampling / peak,
        "process_wall_s": statistics.median(r["process_wall_s"] for r in runs),
        "load_average": [r["load_before"] for r in runs],
        "quality": runs[0]["quality"],
        "settings": runs[0]["manifest"]["settings"],
        "dtype": runs[0]["manifest"].get("dtype"),
    }


def measure_quality(out: Path, seconds: float, seams: list[int]) -> dict[str, float]:
    """Metrics of the continuation (the output's last ``seconds``) against the seed."""
    audio = load_audio(out, channels=None)
    tail = round(seconds * SAMPLE_RATE)
    shift = audio.shape[-1] - tail
    seed = load_audio(SEED, channels=None)
    return quality(seed, audio[..., shift:], [s - shift for s in seams if s > shift])


def format_table(rows: list[dict[str, Any]], seconds: float) -> str:
    lines = [
        f"README main job: {seconds:g} s continuation of {SEED.name}; x real time per stage (seconds in brackets)",
        "",
        "| run | sampling s | x RT | level 2 | level 1 | level 0 | Dance | codec | bound % | load | tag KL | chroma | key | seam | silent |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        stages = " | ".join(
            f"{row['stage_x_realtime'][s]:.2f} ({row['stage_s'][s]:.1f})" if row["stage_x_realtime"][s] else "-" for s in STAGES
        )
        q = row["quality"]
        loads = "/".join(f"{x:.1f}" for x in row["load_average"])
        lines.append(
            f"| {row['name']} | {row['sampling_s']:.1f} | {row['x_realtime']:.2f} | {stages} | {100 * row['fraction_of_bound']:.0f}"
            f" | {loads} | {q['tag_kl_vs_seed']:.3f} | {q['chroma_correlation_vs_seed']:.3f} | {q['key_agreement_vs_seed']:.2f}"
            f" | {q['seam_discontinuity']:.2f} | {q['silent_fraction']:.3f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", help="a git revision to run beside this checkout (default: none)")
    parser.add_argument("--seconds", type=float, default=20.0, help="seconds of continuation (default 20, the README job)")
    parser.add_argument("--repeat", type=int, default=1, help="rounds, each running every side once (default 1)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads of each run (default 2)")
    parser.add_argument("--options", default="", help="jbdiff continue options for every run (e.g. '--model BUNDLE')")
    parser.add_argument("--variant", action="append", default=[], metavar="NAME='OPTIONS'", help="another run of this checkout with these options")
    parser.add_argument("--gflop-per-second-of-audio", type=float, default=117.0, help="the job's cost (default 117, the demo pipeline)")
    parser.add_argument("--peak-gflops", type=float, default=331.0, help="this CPU's bound (default 331: 2-thread bf16 matmul)")
    parser.add_argument("--json", type=Path, default=RESULTS / "speed.json", help="result file")
    args = parser.parse_args(argv)

    common = shlex.split(args.options)
    sides: list[tuple[str, Path | None, list[str]]] = []
    if args.baseline:
        sides.append((f"baseline {args.baseline}", None, common))
    sides.append(("current", ROOT, common))
    for variant in args.variant:
        name, _, options = variant.partition("=")
        sides.append((name, ROOT, common + shlex.split(options)))

    load = os.getloadavg()
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        baseline_tree = tmp / "baseline"
        if args.baseline:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(baseline_tree), args.baseline], check=True, capture_output=True)
        try:
            runs: dict[str, list[dict[str, Any]]] = {name: [] for name, _, _ in sides}
            for round_ in range(args.repeat):
                for index, (name, tree, options) in enumerate(sides):
                    out = tmp / f"run{round_}_{index}.wav"
                    run = run_job(tree or baseline_tree, args.seconds, options, out, args.threads)
                    if "error" in run:
                        print(f"{name}: failed: {run['error']}", flush=True)
                        continue
                    run["quality"] = measure_quality(out, args.seconds, run["manifest"]["seams"])
                    runs[name].append(run)
                    total = sum(run["manifest"]["timings_s"].values())
                    print(f"{name}: {total:.1f} s sampling ({args.seconds / total:.2f} x real time), load {run['load_before']:.1f}", flush=True)
        finally:
            if args.baseline:
                subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(baseline_tree)], check=False, capture_output=True)
    rows = [summarise(name, runs[name], args.seconds, args.gflop_per_second_of_audio, args.peak_gflops) for name, _, _ in sides if runs[name]]
    print()
    print(format_table(rows, args.seconds))
    write_result(args.json, {"machine": machine_info(load, args.threads), "seconds": args.seconds, "rows": rows})


if __name__ == "__main__":
    main()
