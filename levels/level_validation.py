"""Held-out validation of a latent level: the denoising error on fixed windows, by noise level.

The windows come from shards kept out of training (``jbdiff train levelN --val-latents``),
evenly spaced through every file, with their context and (residual levels) start codes. Each
is noised once with fixed noise at the centre of each of ``bins`` equal-width noise-level
bins, so two evaluations of the same model give the same numbers and two checkpoints differ
only by their weights. Per bin it reports the v-objective's squared error, the RMS error of
the predicted clean latents, and the RMS of the clean latents themselves: the error of the
trivial predictor that always answers zero (or the start, for a residual level), which a
model must beat to have learned anything at that noise level.
"""

from __future__ import annotations

import torch

from jbdiff.core.audio_dataset import spread_over
from jbdiff.core.diffusion import noise_level_errors
from jbdiff.core.training import ValidationConfig
from levels.latent_dataset import PAD_CODE
from levels.latent_denoiser import LatentDenoiser
from levels.latent_shards import LatentShards


def validation_windows(
    shards: LatentShards, level: int, window: int, context_mult: int, *, residual: bool, count: int
) -> dict[str, torch.Tensor]:
    """``count`` windows evenly spaced over all held-out files (codes, context, maybe start).

    Returns a batch dict shaped like the training data's: ``codes`` (N, W), ``context``
    (N, C*W) with ``PAD_CODE`` before a file's start, and ``start`` (N, W) for residual levels.
    """
    usable = [i for i, entry in enumerate(shards.entries) if entry.frames[level] >= window]
    if not usable:
        raise ValueError(f"{shards.root}: no held-out file has {window} frames at level {level}")
    spans = [shards.entries[i].frames[level] - window + 1 for i in usable]  # window starts per file
    items: list[dict[str, torch.Tensor]] = []
    for slot, offset in spread_over(spans, count):
        index, start = usable[slot], int(offset)
        item = {"codes": shards.crop(index, level, start, window)}
        if context_mult:
            context_len = context_mult * window
            context = torch.full((context_len,), PAD_CODE, dtype=torch.long)
            available = min(start, context_len)
            if available:
                context[context_len - available :] = shards.crop(index, level, start - available, available)
            item["context"] = context
        if residual:
            item["start"] = shards.crop(index, level, start, window, upsampler_start=True)
        items.append(item)
    return {key: torch.stack([item[key] for item in items]) for key in items[0]}


@torch.no_grad()
def validate(
    denoiser: LatentDenoiser,
    x: torch.Tensor,
    context: torch.Tensor | None,
    start: torch.Tensor | None,
    cfg: ValidationConfig,
) -> dict[str, object]:
    """Errors of ``denoiser`` on clean latents ``x`` (N, C, W) at each noise-level bin
    (:func:`jbdiff.core.diffusion.noise_level_errors`); residual levels start from ``start``.

    Classifier-free guidance is off: the conditional model is measured.
    """
    generator = torch.Generator(device="cpu").manual_seed(cfg.seed)
    noise = torch.randn(x.shape, generator=generator).to(x.device, x.dtype) if start is None else start
    kwargs: dict[str, object] = {}
    if context is not None and denoiser.cfg.context_mult:
        kwargs = {"embedding": context.transpose(1, 2), "embedding_mask_proba": 0.0}
    trivial = x if start is None else x - start
    return noise_level_errors(denoiser.net, x, noise, trivial, cfg.bins, **kwargs)
