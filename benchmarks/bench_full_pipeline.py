"""Sampling speed and peak memory of the whole pipeline at a config size, with random weights.

Usage::

    python benchmarks/bench_full_pipeline.py [--config full|tiny] [--device cuda|cpu] [--dtype float32|bfloat16]
                                             [--seconds 30] [--minutes 1,10] [--json OUT]

Builds every stage from ``configs/<stage>/<config>.yaml`` with random weights (speed and memory
depend on the architecture, not on the weights; the codebooks come from one training-mode pass
on synthetic music), then:

* continues ``examples/knolls_seed.ogg`` by ``--seconds`` with jbdiff's default recipe and
  reports x real time per stage and the peak device memory;
* streams continuations of each of ``--minutes`` to a file with one step per stage (memory does
  not depend on the step count) and reports each one's peak device memory (CUDA: the
  allocator's peak; CPU: the process's ``ru_maxrss``).

The GPU check (``benchmarks/gpu_check.sh``) runs it with ``--config full --device cuda``; on the
CPU, ``--config tiny --seconds 2 --minutes 0.05`` checks that it runs.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from harness import machine_info, peak_mb, write_result

from jbdiff.bundle import Stages
from jbdiff.core.audio import SAMPLE_RATE, load_audio
from jbdiff.core.config import from_dict, load_yaml
from jbdiff.core.device import resolve_device, resolve_dtype
from jbdiff.core.synth import synth_music
from jbdiff.pipeline import Pipeline
from jbdiff.sampling_settings import PRESETS, StageSettings
from levels.codec import Codec
from levels.codec_config import load_codec_config
from levels.latent_denoiser import DenoiserConfig, LatentDenoiser
from levels.vqvae import VQVAE
from upsampler.dance_unet import DanceConfig, DanceUNet

ROOT = Path(__file__).resolve().parents[1]
SEED = ROOT / "examples" / "knolls_seed.ogg"
RESULTS = Path(__file__).resolve().parent / "results"


def random_stages(config: str) -> Stages:
    """Every stage at ``config`` size with random weights, on the CPU in float32."""
    torch.manual_seed(0)
    vqvae = VQVAE(load_codec_config(ROOT / "configs" / "codec" / f"{config}.yaml").model)
    vqvae.train()
    with torch.no_grad():
        vqvae(torch.from_numpy(synth_music(2.0))[None])  # codebooks from encoder outputs
    codec = Codec(vqvae).eval()
    codec.refresh_normalisation()
    denoisers = {}
    for level in (2, 1, 0):
        section = load_yaml(ROOT / "configs" / f"level{level}" / f"{config}.yaml")["model"]
        denoisers[level] = LatentDenoiser(from_dict(DenoiserConfig, section, f"level{level}")).eval()
    dance_section = load_yaml(ROOT / "configs" / "dance" / f"{config}.yaml")["model"]
    return Stages(codec, denoisers, DanceUNet(from_dict(DanceConfig, dance_section, "dance")).eval())


def peak_memory_mb(device: torch.device) -> float:
    """Peak device memory so far (CUDA allocator) or the process's peak resident memory (CPU)."""
    return torch.cuda.max_memory_allocated(device) / 1e6 if device.type == "cuda" else peak_mb()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="full", help="config size of every stage (default full)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="float32", help="diffusion stages' dtype (default float32)")
    parser.add_argument("--seconds", type=float, default=30.0, help="continuation timed with the default recipe (default 30)")
    parser.add_argument("--minutes", default="1,10", help="lengths whose peak memory is measured (default 1,10)")
    parser.add_argument("--json", type=Path, help="result file (default benchmarks/results/full_pipeline_<config>_<device>.json)")
    args = parser.parse_args(argv)

    device, dtype = resolve_device(args.device), resolve_dtype(args.dtype)
    load = os.getloadavg()
    stages = random_stages(args.config)
    stages.codec.to(device)
    for model in stages.denoisers.values():
        model.to(device, dtype)
    assert stages.dance is not None
    stages.dance.to(device, dtype)
    pipe = Pipeline(stages, path=ROOT / "configs", device=device, dtype=dtype, fingerprints={}, settings=PRESETS["default"])
    seed = load_audio(SEED, channels=None)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    started = time.perf_counter()
    result = pipe.continue_(seed, SAMPLE_RATE, args.seconds)
    wall = time.perf_counter() - started
    timings = result.manifest["timings_s"]
    speed = {
        "seconds": args.seconds, "wall_s": wall, "x_realtime": args.seconds / wall, "timings_s": timings,
        "stage_x_realtime": {stage: args.seconds / t for stage, t in timings.items() if t > 0},
        "peak_memory_mb": peak_memory_mb(device),
    }
    print(f"{args.seconds:g} s continuation: {wall:.1f} s ({speed['x_realtime']:.2f} x real time); stages {timings}; peak {speed['peak_memory_mb']:.0f} MB", flush=True)

    one = {name: StageSettings(1, guidance=1.0) for name in ("level2", "level1", "level0", "dance")}
    memory = []
    for minutes in (float(m) for m in args.minutes.split(",")):
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        with tempfile.TemporaryDirectory() as folder:
            started = time.perf_counter()
            pipe.continue_(seed, SAMPLE_RATE, minutes * 60, settings=pipe.settings.replace(**one), out=Path(folder) / "out.wav")
            row = {"minutes": minutes, "peak_memory_mb": peak_memory_mb(device), "wall_s": time.perf_counter() - started}
        memory.append(row)
        print(f"{minutes:g} min (one step per stage): peak {row['peak_memory_mb']:.0f} MB, {row['wall_s']:.0f} s", flush=True)
    result_json: dict[str, Any] = {
        "config": args.config, "device": str(device), "dtype": args.dtype, "speed": speed, "memory": memory,
        "machine": machine_info(load),
    }
    if device.type == "cuda":
        result_json["gpu"] = torch.cuda.get_device_name(device)
    write_result(args.json or RESULTS / f"full_pipeline_{args.config}_{device.type}.json", result_json)


if __name__ == "__main__":
    main()
