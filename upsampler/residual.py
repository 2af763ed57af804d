"""The residual upsamplers (levels 1 and 0): refine "the level above, re-encoded here"."""

from __future__ import annotations

import torch

from jbdiff.latent_denoiser import LatentDenoiser

STAGES = {1: "level1", 0: "level0"}


def upsample_window(
    model: LatentDenoiser,
    start: torch.Tensor,
    previous: torch.Tensor | None,
    *,
    steps: int = 50,
    init_strength: float = 0.5,
    guidance: float = 1.0,
    sampler: str = "dpm",
) -> torch.Tensor:
    """This level's latents for one window (B, 64, window) from its start tensor.

    ``start`` is the level above decoded to audio and re-encoded at this level: it is both
    the diffusion's starting point (the model was trained with it in place of noise) and the
    init, of which the first ``init_strength`` of the steps are skipped. ``previous`` holds this
    level's latents before the window (the context), any length, or None.
    """
    return model.generate(
        start, model.context_from(previous), steps=steps, guidance=guidance, sampler=sampler,
        init=start, init_strength=init_strength,
    )
