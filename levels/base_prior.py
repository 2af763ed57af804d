"""The level-2 base prior: generates the next window of coarsest latents after the ones so far."""

from __future__ import annotations

import torch

from jbdiff.latent_denoiser import LatentDenoiser

STAGE = "level2"


def generate_next_window(
    prior: LatentDenoiser,
    previous: torch.Tensor | None,
    noise: torch.Tensor,
    *,
    steps: int = 50,
    guidance: float = 4.0,
    sampler: str = "dpm",
) -> torch.Tensor:
    """One new window (B, 64, window) cross-attending to the windows before it.

    ``previous`` holds the level-2 latents so far (seed and generated), any length; at a
    song's start the context is zero-padded, and with no history at all it is unconditional.
    """
    return prior.generate(noise, prior.context_from(previous), steps=steps, guidance=guidance, sampler=sampler)
