"""Codec speed and memory on this CPU, for the Jukebox 5b VQ-VAE architecture.

Usage: ``python benchmarks/bench_codec.py [--json OUT] [--quick] [--reference-only] [--threads N]``

Weights are random and the codebooks are drawn from one training-mode forward pass on a
short synthetic clip: speed and memory depend on the architecture, not on the weights.

* Side by side with the reference (``jukebox-infer``, the test dependency) holding the same
  weights, in this process, turn by turn on the same input: encode and decode rates of both
  at each level, the number of differing codes and the largest difference of decoded audio
  (``--threads``, default 1, so both sides see the same load).
* Speed: encode and decode of each level on synthetic music, as multiples of real time
  (median of 3 runs, after one warm-up).
* Memory: each length runs in a fresh process that reports its resident memory after
  building the model and the input (baseline) and its peak (``ru_maxrss``) after encoding
  all levels and then decoding each level in slices of the codes, dropping each slice's
  audio. The growth (peak - baseline) should not depend on the length beyond the codes,
  which are O(length).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from harness import MB, build_codec, machine_info, peak_mb, rss_mb, write_result

from jbdiff.core.synth import synth_music
from levels.codec import Codec

DEFAULT_JSON = Path(__file__).resolve().parent / "results" / "codec.json"
SR = Codec.sample_rate
RUNS = 3
DECODE_SLICE_SECONDS = 30.0


def threads() -> int:
    """CPU cores this process may use."""
    return len(os.sched_getaffinity(0))


def median_seconds(work: Callable[[], object]) -> float:
    """Median wall time of ``RUNS`` calls of ``work``."""
    times = []
    for _ in range(RUNS):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench_speed(codec: Codec, seconds: float) -> list[dict[str, Any]]:
    """Encode and decode speed of each level on ``seconds`` of synthetic music."""
    audio = torch.from_numpy(synth_music(seconds))[None]
    codec.decode_codes(0, codec.encode_codes(audio[..., :SR], levels=[0])[0])  # warm-up
    rows = []
    for level, hop in enumerate(codec.hops):
        codes = codec.encode_codes(audio, levels=[level])[level]
        encode = median_seconds(functools.partial(codec.encode_codes, audio, levels=[level]))
        decode = median_seconds(functools.partial(codec.decode_codes, level, codes))
        rows.append(
            {
                "level": level,
                "hop": hop,
                "encode_s": encode,
                "decode_s": decode,
                "encode_x_realtime": seconds / encode,
                "decode_x_realtime": seconds / decode,
            }
        )
    return rows


def build_reference(codec: Codec, samples: int) -> Any:
    """jukebox-infer's VQ-VAE (5b hyperparameters) holding ``codec``'s weights and codebooks."""
    from jukebox_infer.hparams import setup_hparams
    from jukebox_infer.make_models import make_vqvae

    hps = setup_hparams("vqvae", {"restore_vqvae": "", "sample_length": samples})
    reference = make_vqvae(hps, "cpu")
    reference.load_state_dict(codec.vqvae.state_dict())
    return reference.eval()


def bench_reference(codec: Codec, seconds: float) -> list[dict[str, Any]]:
    """Ours beside the reference on ``seconds`` of synthetic music: rates, code and audio differences."""
    audio = torch.from_numpy(synth_music(seconds))[None]
    audio = audio[..., : audio.shape[-1] // max(codec.hops) * max(codec.hops)]
    reference = build_reference(codec, audio.shape[-1])
    time_major = audio.transpose(1, 2).contiguous()
    rows = []
    with torch.no_grad():
        for level, hop in enumerate(codec.hops):
            def ref_encode(level: int = level) -> torch.Tensor:
                return reference.encode(time_major, start_level=level, end_level=level + 1)[0]

            def ref_decode(codes: torch.Tensor, level: int = level) -> torch.Tensor:
                return reference.decode([codes], start_level=level, end_level=level + 1).transpose(1, 2)

            ours_codes, ref_codes = codec.encode_codes(audio, levels=[level])[level], ref_encode()
            ours_audio, ref_audio = codec.decode_codes(level, ref_codes), ref_decode(ref_codes)
            times: dict[str, list[float]] = {"encode": [], "ref_encode": [], "decode": [], "ref_decode": []}
            for _ in range(RUNS):  # turn by turn, so a change of load hits both sides alike
                for name, work in (
                    ("encode", functools.partial(codec.encode_codes, audio, levels=[level])),
                    ("ref_encode", ref_encode),
                    ("decode", functools.partial(codec.decode_codes, level, ref_codes)),
                    ("ref_decode", functools.partial(ref_decode, ref_codes)),
                ):
                    start = time.perf_counter()
                    work()
                    times[name].append(time.perf_counter() - start)
            median = {name: statistics.median(values) for name, values in times.items()}
            rows.append(
                {
                    "level": level,
                    "hop": hop,
                    **{f"{name}_x_realtime": seconds / value for name, value in median.items()},
                    "encode_speedup": median["ref_encode"] / median["encode"],
                    "decode_speedup": median["ref_decode"] / median["decode"],
                    "codes_differing": int((ours_codes != ref_codes).sum()),
                    "codes": ref_codes.numel(),
                    "audio_max_abs_diff": float((ours_audio - ref_audio).abs().max()),
                    "audio_peak": float(ref_audio.abs().max()),
                }
            )
    return rows


def format_reference(rows: list[dict[str, Any]], seconds: float, threads: int, load: tuple[float, float]) -> str:
    """The side-by-side table."""
    lines = [
        (
            f"Ours vs jukebox-infer, same weights, {seconds:g} s of synthetic music, {threads} torch thread(s),"
            f" median of {RUNS} turn-by-turn runs (x real time); load average {load[0]:.1f} before, {load[1]:.1f} after"
        ),
        "",
        "| level | encode ours | encode ref | speed-up | decode ours | decode ref | speed-up | codes differing | audio max abs diff (peak) |",
        "|------:|------------:|-----------:|---------:|------------:|-----------:|---------:|----------------:|--------------------------:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['level']:>5} | {row['encode_x_realtime']:>11.2f} | {row['ref_encode_x_realtime']:>10.2f}"
            f" | {row['encode_speedup']:>7.2f}x | {row['decode_x_realtime']:>11.2f} | {row['ref_decode_x_realtime']:>10.2f}"
            f" | {row['decode_speedup']:>7.2f}x | {row['codes_differing']:>6} of {row['codes']:<6}"
            f" | {row['audio_max_abs_diff']:.2e} ({row['audio_peak']:.2f}) |"
        )
    return "\n".join(lines)


def memory_child(seconds: float) -> dict[str, Any]:
    """Encode all levels of ``seconds`` of audio, then decode each level slice by slice."""
    torch.set_num_threads(threads())
    codec = build_codec()
    samples, clip = round(seconds * SR), synth_music(10.0)
    audio = torch.from_numpy(np.tile(clip, (1, -(-samples // clip.shape[-1])))[:, :samples])[None]
    del clip
    baseline, peak_before = rss_mb(), peak_mb()
    start = time.perf_counter()
    codes = codec.encode_codes(audio)
    peak_encode = peak_mb()
    for level, level_codes in codes.items():
        step = round(DECODE_SLICE_SECONDS * SR) // codec.hops[level]
        for lo in range(0, level_codes.shape[-1], step):
            codec.decode_codes(level, level_codes[:, lo : lo + step])
    peak = peak_mb()
    return {
        "seconds": seconds,
        "input_mb": audio.numel() * audio.element_size() / MB,
        "codes_mb": sum(c.numel() * c.element_size() for c in codes.values()) / MB,
        "baseline_rss_mb": baseline,
        "peak_before_mb": peak_before,
        "peak_after_encode_mb": peak_encode,
        "peak_mb": peak,
        "growth_encode_mb": peak_encode - baseline,
        "growth_mb": peak - baseline,
        "wall_s": time.perf_counter() - start,
    }


def bench_memory(seconds: float) -> dict[str, Any]:
    """Run :func:`memory_child` in a fresh Python process."""
    done = subprocess.run(
        [sys.executable, __file__, "--memory-child", str(seconds)], capture_output=True, text=True, check=True
    )
    return json.loads(done.stdout.splitlines()[-1])


def notes(chunk_seconds: float) -> list[str]:
    """What the memory figures include."""
    slice_mb = DECODE_SLICE_SECONDS * SR * 4 / MB
    return [
        (
            f"memory workload: encode_codes on the whole input (in {chunk_seconds:g} s chunks with overlap inside),"
            f" then each level decoded by decode_codes on {DECODE_SLICE_SECONDS:g} s slices of its codes (chunked"
            f" the same way inside); each slice's audio ({slice_mb:.1f} MB) is dropped before the next."
        ),
        (
            "held above the baseline (model + input array): one chunk's activations, the codes of all levels"
            " (kept to the end; a second copy while a level's chunks are concatenated). Only the codes (size in"
            " the codes column) grow with the length; encode_codes pads the input chunk by chunk."
        ),
        (
            "decoding a whole level at once returns frames * hop * 4 bytes (106 MB for 10 min at any level),"
            " O(length) by nature, so it is not part of this measurement."
        ),
        (
            "peak before = ru_maxrss before the workload (model building included); growth = peak - baseline RSS,"
            " meaningful when peak exceeds peak before."
        ),
        (
            "RSS peaks include memory the allocator keeps after frees and vary from run to run with thread"
            " timing; with one run per length, read the growth ratio with that spread in mind."
        ),
    ]


def format_tables(result: dict[str, Any]) -> str:
    """Human-readable tables of a result dict."""
    speed, memory = result["speed"], result["memory"]
    machine = result["machine"]
    lines = [
        (
            f"Jukebox 5b VQ-VAE architecture, random weights; {machine['torch_threads']} torch threads; load average"
            f" {machine['load_average_before'][0]:.1f} before, {machine['load_average_after'][0]:.1f} after"
        ),
        "",
        f"Speed on {speed['seconds']:g} s of synthetic music, median of {RUNS} runs (x real time):",
        "",
        "| level | hop | encode x RT | decode x RT |",
        "|------:|----:|------------:|------------:|",
    ]
    for row in speed["levels"]:
        lines.append(
            f"| {row['level']:>5} | {row['hop']:>3} | {row['encode_x_realtime']:>11.2f} | {row['decode_x_realtime']:>11.2f} |"
        )
    lines += [
        "",
        (
            f"Peak memory, encode all levels + decode in {DECODE_SLICE_SECONDS:g} s slices,"
            f" chunk {memory['chunk_seconds']:g} s, fresh process each (MB):"
        ),
        "",
        "|   audio | input | codes | baseline RSS | peak before | peak | growth (encode) | growth (all) | wall s |",
        "|--------:|------:|------:|-------------:|------------:|-----:|----------------:|-------------:|-------:|",
    ]
    for run in memory["runs"]:
        lines.append(
            f"| {run['seconds']:>5g} s | {run['input_mb']:>5.1f} | {run['codes_mb']:>5.1f} | {run['baseline_rss_mb']:>12.0f}"
            f" | {run['peak_before_mb']:>11.0f} | {run['peak_mb']:>4.0f} | {run['growth_encode_mb']:>15.0f}"
            f" | {run['growth_mb']:>12.0f} | {run['wall_s']:>6.0f} |"
        )
    lines += ["", f"growth ratio, longer / shorter: {memory['growth_ratio']:.2f}", ""]
    lines += [f"- {note}" for note in result["notes"]]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--json", type=Path, default=DEFAULT_JSON, help=f"where to write the results (default {DEFAULT_JSON})"
    )
    parser.add_argument(
        "--quick", action="store_true", help="3 s speed clip; memory at 30 s vs 60 s instead of 1 vs 10 min"
    )
    parser.add_argument("--reference-only", action="store_true", help="only the side-by-side with jukebox-infer")
    parser.add_argument("--threads", type=int, default=1, help="torch threads for the side-by-side (default 1)")
    parser.add_argument("--memory-child", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.memory_child is not None:
        print(json.dumps(memory_child(args.memory_child)))
        return

    speed_seconds = 3.0 if args.quick else 10.0
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    side_by_side = bench_reference(build_codec(), speed_seconds)
    load_after = os.getloadavg()
    print(format_reference(side_by_side, speed_seconds, args.threads, (load_before[0], load_after[0])), "\n")
    reference = {
        "seconds": speed_seconds, "threads": args.threads, "load_average_before": load_before,
        "load_average_after": load_after, "levels": side_by_side,
    }
    if args.reference_only:
        write_result(args.json, {"machine": machine_info(load_before), "reference": reference})
        return

    torch.set_num_threads(threads())
    load_before = os.getloadavg()
    # Memory first, while this process is small: a child's ru_maxrss starts at least at the peak of its parent.
    runs = [bench_memory(seconds) for seconds in ((30.0, 60.0) if args.quick else (60.0, 600.0))]
    codec = build_codec()
    speed = bench_speed(codec, speed_seconds)
    result = {
        "machine": machine_info(load_before),
        "speed": {"seconds": speed_seconds, "runs": RUNS, "levels": speed},
        "memory": {
            "chunk_seconds": codec.chunk_seconds,
            "decode_slice_seconds": DECODE_SLICE_SECONDS,
            "runs": runs,
            "growth_ratio": runs[1]["growth_mb"] / runs[0]["growth_mb"],
        },
        "notes": notes(codec.chunk_seconds),
        "reference": reference,
    }
    print(format_tables(result))
    write_result(args.json, result)


if __name__ == "__main__":
    main()
