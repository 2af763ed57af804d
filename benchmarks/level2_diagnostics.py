"""Why a base prior makes (or fails to make) music: held-out error by noise level, and codes it generates.

Usage: ``python benchmarks/level2_diagnostics.py --model RUN_OR_BUNDLE --latents HELD_OUT_LATENTS
[--codec CODEC] [--windows 8] [--steps 24] [--guidance 1,4] [--threads 1] [--json OUT]``

Part 1 (``levels.level_validation``): on windows of held-out shards, the RMS error of the
predicted clean latents at each noise level against the trivial predictor (always zero); a
model worse than zero at high noise has not learned what a window holds there.

Part 2: each window is generated from noise with its real context (the model's own window
length, ``--steps`` DPM-Solver++ steps, each ``--guidance``), snapped to the nearest codes, and
compared with the real window: latent spread (std), code perplexity (exp of the entropy of the
code histogram over all windows) and code change rate (share of frames whose code differs from
the frame before). Collapse shows as low perplexity and change rate; over-dispersion as spread.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

import torch

from jbdiff.core.training import ValidationConfig
from levels.codec_io import load_codec
from levels.denoiser_training import lookup_latents
from levels.latent_denoiser import load_denoiser
from levels.latent_shards import LatentShards
from levels.level_validation import validate, validation_windows


def code_stats(codes: torch.Tensor) -> dict[str, float]:
    """Perplexity and change rate of codes (N, T)."""
    counts = torch.bincount(codes.flatten()).double()
    p = counts[counts > 0] / counts.sum()
    perplexity = math.exp(float(-(p * p.log()).sum()))
    change = float((codes[:, 1:] != codes[:, :-1]).double().mean())
    return {"perplexity": perplexity, "change_rate": change}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="level-2 run folder or bundle")
    parser.add_argument("--latents", required=True, help="held-out latents (jbdiff encode --levels 2)")
    parser.add_argument("--codec", help="codec (default: the latents' manifest's)")
    parser.add_argument("--windows", type=int, default=8)
    parser.add_argument("--steps", type=int, default=24)
    parser.add_argument("--guidance", default="1,4")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    shards = LatentShards(args.latents)
    codec = load_codec(args.codec or shards.manifest["codec_source"])
    model = load_denoiser(args.model, "level2")
    cfg = model.cfg
    codebook = codec.latent_codebook(2)
    batch = validation_windows(shards, 2, cfg.window, cfg.context_mult, residual=False, count=args.windows)
    x = lookup_latents(codebook, batch["codes"])
    context = lookup_latents(codebook, batch["context"]) if "context" in batch else None
    result: dict[str, Any] = {"model": str(args.model), "window": cfg.window, "context": cfg.context_length}
    result["validation"] = validate(model, x, context, None, ValidationConfig(bins=10))
    print(f"{args.model}: window {cfg.window}, context {cfg.context_length}; validation loss {result['validation']['loss']:.4f}")
    print("sigma   v_mse   x_rmse  zero_rmse")
    for row in result["validation"]["bins"]:
        print(f"{row['sigma']:5.2f} {row['v_mse']:7.4f} {row['x_rmse']:8.4f} {row['zero_rmse']:10.4f}")

    real = {"std": float(x.std()), **code_stats(batch["codes"])}
    rows = {"real": real}
    generator = torch.Generator().manual_seed(0)
    noise = torch.randn(x.shape, generator=generator)
    for guidance in (float(g) for g in args.guidance.split(",")):
        sample = model.generate(noise, context, steps=args.steps, guidance=guidance)
        rows[f"guidance {guidance:g}"] = {"std": float(sample.std()), **code_stats(codec.latents_to_codes(2, sample))}
    result["generated"] = rows
    print(f"\n{'':14s} {'std':>6s} {'perplexity':>10s} {'change':>7s}")
    for name, row in rows.items():
        print(f"{name:14s} {row['std']:6.3f} {row['perplexity']:10.1f} {row['change_rate']:7.3f}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(__import__("json").dumps(result, indent=1) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
