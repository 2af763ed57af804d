"""Measurement helpers shared by the benchmarks: memory readings, the 5b test codec, results."""

from __future__ import annotations

import json
import os
import platform
import resource
from pathlib import Path
from typing import Any

import torch

from jbdiff.core.atomic import atomic_path
from jbdiff.core.synth import synth_music
from levels.codec import Codec
from levels.vqvae import VQVAE, VQVAEConfig

MB = 1e6


def rss_mb() -> float:
    """Current resident memory of this process."""
    with open("/proc/self/status") as status:
        kb = next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))
    return kb * 1e3 / MB


def peak_mb() -> float:
    """Peak resident memory of this process so far (``ru_maxrss``, kB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1e3 / MB


def machine_info(load_before: tuple[float, float, float], threads: int | None = None) -> dict[str, Any]:
    """Platform, torch version, threads (this process's unless given) and the load average before and after."""
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads() if threads is None else threads,
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
    }


def build_codec() -> Codec:
    """The 5b architecture with random weights and codebooks drawn from a 1 s synthetic clip."""
    torch.manual_seed(0)
    vqvae = VQVAE(VQVAEConfig())
    vqvae.train()
    with torch.no_grad():
        vqvae(torch.from_numpy(synth_music(1.0))[None])
    codec = Codec(vqvae).eval()
    codec.refresh_normalisation()
    return codec


def write_result(path: Path, result: dict[str, Any]) -> None:
    """Write a benchmark's JSON atomically and say where."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {path}")
