"""UNet1d vs audio-diffusion-pytorch ``UNetV0``: training-step time and peak memory on this machine.

Usage: ``python benchmarks/bench_unet.py [--json OUT] [--quick] [--lengths N ...] [--batch B] [--timeout S] [--device cpu|cuda]``

Three variants, side by side, with the Jukebox-Diffusion v1 level-2 architecture on latents of
length 768, 3072 and 12288 and a cross-attention context of 1536 x 64 (``--quick``: length 768
only, and the same topology at half the width):

* ``reference``: ``UNetV0(dim=1, ...)`` of audio-diffusion-pytorch 0.1.3 (einsum attention),
* ``ours``: :class:`jbdiff.core.unet.UNet1d` with the same weights layout (SDPA attention),
* ``ours+ckpt``: the same with ``gradient_checkpointing=True``.

A training step is: forward, ``mean(out**2)``, backward (random weights, train mode).

* Memory: each variant and length in a fresh process: build the model, run one step on a
  length-64 input (so the gradients exist), read the resident memory (baseline), run one step
  at the length; peak growth is ``ru_maxrss`` minus the baseline: activations and autograd
  buffers, not weights or gradients.
* Time: one process per length holds the three models and times them in alternation, round
  after round, so a change of load on a shared machine hits all three alike; the best step
  of each is compared. Where a length has no timing rounds (12288), the step of the memory
  process is the timing (one step each).
* ``--device cuda``: the same on the GPU; memory is the CUDA allocator's peak during the step
  minus what it held before it (``torch.cuda.max_memory_allocated``), and every timing waits
  for the GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from harness import MB, machine_info, peak_mb, rss_mb, write_result
from torch import nn

from jbdiff.core.unet import UNet1d, UNetConfig
from jbdiff.core.unet_reference import JBDIFF_V1_UNET, reference_unet

DEFAULT_JSON = Path(__file__).resolve().parent / "results" / "unet.json"
VARIANTS = ("reference", "ours", "ours+ckpt")
CONTEXT_LENGTH = JBDIFF_V1_UNET["embedding_max_length"]
WARMUP_LENGTH = 64
HALF = {**JBDIFF_V1_UNET, "channels": tuple(c // 2 for c in JBDIFF_V1_UNET["channels"]), "attention_heads": 4, "attention_features": 32}
CONFIGS = {"jbdiff_v1": JBDIFF_V1_UNET, "jbdiff_v1_half": HALF}
ROUNDS = {768: 5, 3072: 3}  # timing rounds per length; other lengths: the memory processes' single step


def threads() -> int:
    """CPU cores this process may use."""
    return len(os.sched_getaffinity(0))


def build(variant: str, config: str, device: torch.device) -> nn.Module:
    """One variant with random weights (seed 0), in train mode."""
    torch.manual_seed(0)
    kwargs = CONFIGS[config]
    if variant == "reference":
        return reference_unet(**kwargs).train().to(device)
    return UNet1d(UNetConfig(**kwargs, gradient_checkpointing=variant == "ours+ckpt")).train().to(device)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def stepper(model: nn.Module, config: str, batch: int, device: torch.device) -> Callable[[int], float]:
    """A function running one training step at a given length and returning its wall time."""
    kwargs = CONFIGS[config]
    gen = torch.Generator().manual_seed(1)
    time_ = torch.rand(batch, generator=gen).to(device)
    embedding = torch.randn(batch, CONTEXT_LENGTH, kwargs["embedding_features"], generator=gen).to(device)

    def step(length: int) -> float:
        x = torch.randn(batch, kwargs["in_channels"], length, generator=gen).to(device)
        _sync(device)
        start = time.perf_counter()
        model(x, time_, embedding=embedding).square().mean().backward()
        _sync(device)
        return time.perf_counter() - start

    return step


def _memory_mb(device: torch.device, peak: bool) -> float:
    if device.type == "cuda":
        return (torch.cuda.max_memory_allocated(device) if peak else torch.cuda.memory_allocated(device)) / MB
    return peak_mb() if peak else rss_mb()


def memory_child(variant: str, config: str, length: int, batch: int, device: torch.device) -> dict[str, Any]:
    """Peak memory growth of one step, in this fresh process."""
    torch.set_num_threads(threads())
    model = build(variant, config, device)
    step = stepper(model, config, batch, device)
    step(WARMUP_LENGTH)
    peak_before = _memory_mb(device, peak=True)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    baseline = _memory_mb(device, peak=False)
    seconds = step(length)
    peak = _memory_mb(device, peak=True)
    return {
        "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
        "step_s": seconds,
        "baseline_rss_mb": baseline,
        "peak_before_mb": peak_before,
        "peak_mb": peak,
        "growth_mb": peak - baseline,
        "growth_is_lower_bound": device.type == "cpu" and peak <= peak_before,
    }


def timing_child(config: str, length: int, batch: int, rounds: int, device: torch.device) -> dict[str, list[float]]:
    """Step times of the three variants, alternating, ``rounds`` rounds, in this fresh process."""
    torch.set_num_threads(threads())
    steps = {variant: stepper(build(variant, config, device), config, batch, device) for variant in VARIANTS}
    for step in steps.values():
        step(WARMUP_LENGTH)
    times: dict[str, list[float]] = {variant: [] for variant in VARIANTS}
    for _ in range(rounds):
        for variant, step in steps.items():
            times[variant].append(step(length))
    return times


def child(args: list[str], timeout: float | None) -> dict[str, Any]:
    """Run this script with ``--child args`` in a fresh process; failures come back as ``error``."""
    try:
        done = subprocess.run(
            [sys.executable, __file__, "--child", *args], check=False, capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:g} s"}
    if done.returncode != 0:
        return {"error": f"exit {done.returncode}: {(done.stderr.strip().splitlines() or ['no output'])[-1]}"}
    return json.loads(done.stdout.splitlines()[-1])


def bench_length(config: str, length: int, batch: int, timeout: float | None, device: str) -> list[dict[str, Any]]:
    """The three rows (one per variant) of one length."""
    rows = []
    for variant in VARIANTS:
        memory = child(["memory", variant, config, str(length), str(batch), device], timeout)
        rows.append({"variant": variant, "length": length, "batch": batch, **memory})
        print(f"memory {variant} @ {length}: {memory.get('growth_mb', memory.get('error'))}", file=sys.stderr, flush=True)
    rounds = ROUNDS.get(length, 0)
    timing = child(["time", config, str(length), str(batch), str(rounds), device], timeout) if rounds else {}
    for row in rows:
        if "error" in timing:
            row["timing_error"] = timing["error"]
        times = timing.get(row["variant"]) or ([row["step_s"]] if "step_s" in row else [])
        if times:
            timed_in = "alternation" if rounds else "memory process"
            row.update(times_s=times, best_s=min(times), median_s=statistics.median(times), timed_in=timed_in)
    ref = rows[0]
    for row in rows:
        if "best_s" in row and "best_s" in ref:
            row["speedup_vs_reference"] = ref["best_s"] / row["best_s"]
        if "growth_mb" in row and "growth_mb" in ref:
            row["memory_saving_vs_reference"] = ref["growth_mb"] / row["growth_mb"]
    return rows


def format_table(result: dict[str, Any]) -> str:
    """Human-readable table of a result dict."""
    machine, nan = result["machine"], float("nan")
    params = next((r["params_m"] for r in result["rows"] if "params_m" in r), nan)
    title = (
        f"{result['config']} ({params:.1f} M params), batch {result['batch']}, context {CONTEXT_LENGTH} x"
        f" {CONFIGS[result['config']]['embedding_features']}; {machine['torch_threads']} torch threads; load average"
        f" {machine['load_average_before'][0]:.1f} -> {machine['load_average_after'][0]:.1f}"
    )
    lines = [
        title,
        "",
        "| length | variant    | steps | best s | median s | speed-up | peak growth MB | memory saving |",
        "|-------:|:-----------|------:|-------:|---------:|---------:|---------------:|--------------:|",
    ]
    for row in result["rows"]:
        errors = "; ".join(row[k] for k in ("error", "timing_error") if k in row)
        bound = "<=" if row.get("growth_is_lower_bound") else "  "
        lines.append(
            f"| {row['length']:>6} | {row['variant']:<10} | {len(row.get('times_s', [])):>5} | {row.get('best_s', nan):>6.2f}"
            f" | {row.get('median_s', nan):>8.2f} | {row.get('speedup_vs_reference', nan):>7.2f}x"
            f" | {bound}{row.get('growth_mb', nan):>12.0f} | {row.get('memory_saving_vs_reference', nan):>12.2f}x |"
            + (f" {errors}" if errors else "")
        )
    lines += ["", *(f"- {note}" for note in result["notes"])]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help=f"where to write the results (default {DEFAULT_JSON})")
    parser.add_argument("--quick", action="store_true", help="length 768 only, half-width architecture")
    parser.add_argument("--lengths", type=int, nargs="+", help="latent lengths (default 768 3072 12288)")
    parser.add_argument("--batch", type=int, default=1, help="batch size (default 1: CPU)")
    parser.add_argument("--timeout", type=float, help="seconds allowed per child process (default: none)")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="where the steps run (default cpu)")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child is not None:
        kind, *rest = args.child
        if kind == "memory":
            variant, config, length, batch, device = rest
            print(json.dumps(memory_child(variant, config, int(length), int(batch), torch.device(device))))
        else:
            config, length, batch, rounds, device = rest
            print(json.dumps(timing_child(config, int(length), int(batch), int(rounds), torch.device(device))))
        return

    config = "jbdiff_v1_half" if args.quick else "jbdiff_v1"
    lengths = args.lengths or ([768] if args.quick else [768, 3072, 12288])
    load_before = os.getloadavg()
    rows = [row for length in lengths for row in bench_length(config, length, args.batch, args.timeout, args.device)]
    result = {
        "config": config,
        "device": args.device,
        "architecture": {k: list(v) if isinstance(v, tuple) else v for k, v in CONFIGS[config].items()},
        "batch": args.batch,
        "context_length": CONTEXT_LENGTH,
        "machine": machine_info(load_before, threads()),
        "rows": rows,
        "notes": [
            (
                "steps/best/median s: timed training steps (forward, mean(out**2), backward); with rounds, the"
                " three variants alternate in one process; speed-up = reference best / variant best (the best"
                " step is the least disturbed by other load on a shared machine)."
            ),
            (
                "peak growth: one step in a fresh process, ru_maxrss minus the resident memory after a"
                f" length-{WARMUP_LENGTH} warm-up step (weights and gradients excluded); '<=' marks a peak below"
                " the process's earlier peak (a lower bound); memory saving = reference growth / variant growth."
            ),
        ],
    }
    print(format_table(result))
    write_result(args.json, result)


if __name__ == "__main__":
    main()
