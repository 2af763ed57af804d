"""The residual upsamplers (levels 1 and 0): refine "the level above, re-encoded here"."""

from __future__ import annotations

from collections.abc import Callable

import torch

from levels.latent_denoiser import LatentDenoiser


def upsample_window(
    model: LatentDenoiser,
    start: torch.Tensor,
    previous: torch.Tensor | None,
    *,
    steps: int = 50,
    init_strength: float = 0.5,
    guidance: float = 1.0,
    sampler: str = "dpm",
    known: torch.Tensor | None = None,
    known_mask: torch.Tensor | None = None,
    progress: Callable[[], None] | None = None,
) -> torch.Tensor:
    """This level's latents for a stretch (B, 64, frames) from its start tensor.

    ``start`` is the level above decoded to audio and re-encoded at this level (or, for a
    remix that starts at this level, the recording's own latents): it is both the
    diffusion's starting point (the model was trained with it in place of noise) and the
    init, of which the first ``init_strength`` of the steps are skipped. ``previous`` holds
    this level's latents before the stretch (the context), any length, or None. ``known``
    latents are kept where ``known_mask`` is True (inpainting at this level's resolution).
    """
    return model.generate(
        start, model.context_from(previous), steps=steps, guidance=guidance, sampler=sampler,
        init=start, init_strength=init_strength, known=known, known_mask=known_mask, progress=progress,
    )
