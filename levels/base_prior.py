"""The level-2 base prior: generates the next stretch of coarsest latents after the ones so far."""

from __future__ import annotations

from collections.abc import Callable

import torch

from levels.latent_denoiser import LatentDenoiser


def generate_next_window(
    prior: LatentDenoiser,
    previous: torch.Tensor | None,
    noise: torch.Tensor,
    *,
    steps: int = 50,
    guidance: float = 4.0,
    sampler: str = "dpm",
    init: torch.Tensor | None = None,
    init_strength: float = 0.0,
    known: torch.Tensor | None = None,
    known_mask: torch.Tensor | None = None,
    jumps: int = 0,
    generator: torch.Generator | None = None,
    progress: Callable[[], None] | None = None,
) -> torch.Tensor:
    """New latents shaped like ``noise`` (one window or several), cross-attending to the history.

    ``previous`` holds the level-2 latents so far (seed and generated), any length; at a
    song's start the context is zero-padded, and with no history at all it is unconditional.
    With ``init`` (a recording's latents, for remix) the first ``init_strength`` of the steps
    are skipped and the sampler starts from ``init`` re-noised. With ``known`` latents (a
    recording's, for inpainting) the entries where ``known_mask`` is True are kept and the
    rest is generated to fit both them and the history (``jumps`` resamplings per step).
    """
    return prior.generate(
        noise, prior.context_from(previous), steps=steps, guidance=guidance, sampler=sampler,
        init=init, init_strength=init_strength, known=known, known_mask=known_mask, jumps=jumps,
        generator=generator, progress=progress,
    )
