"""A latent denoiser that cross-attends to the windows before it (the core of every level).

A window of ``window`` latent frames is denoised while the UNet cross-attends to the
``context_mult`` windows that precede it (zero-filled where the song has not started; no
context at all means unconditional, through the learned classifier-free-guidance embedding).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from jbdiff.core.config import from_dict, to_dict
from jbdiff.core.diffusion import VNetwork, v_loss
from jbdiff.core.samplers import invert, sample
from jbdiff.core.stage_io import load_stage_weights, stage_section
from jbdiff.core.unet import UNet1d, UNetConfig


@dataclass(frozen=True)
class DenoiserConfig:
    """A UNet plus the window geometry and the context dropout used for guidance."""

    unet: UNetConfig = field(default_factory=lambda: UNetConfig(in_channels=64, channels=(64,), factors=(1,), items=(1,)))
    window: int = 768
    context_mult: int = 2
    context_dropout: float = 0.1

    def __post_init__(self) -> None:
        if self.window % self.unet.total_factor:
            raise ValueError(f"window {self.window} must be a multiple of the UNet's total factor {self.unet.total_factor}")
        if self.context_mult < 0:
            raise ValueError("context_mult must be >= 0")
        if self.context_mult and self.unet.embedding_max_length != self.context_length:
            raise ValueError(
                f"unet.embedding_max_length must equal context_mult * window = {self.context_length}"
            )

    @property
    def context_length(self) -> int:
        return self.context_mult * self.window

    @property
    def channels(self) -> int:
        return self.unet.in_channels


class LatentDenoiser(nn.Module):
    """A v-objective UNet over latent windows with cross-attention to the preceding windows."""

    def __init__(self, cfg: DenoiserConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.net = UNet1d(cfg.unet)

    def _embedding(self, context: torch.Tensor | None, batch: int, like: torch.Tensor) -> tuple[torch.Tensor | None, bool]:
        """(B, N, C) cross-attention input and whether it is the unconditional stand-in."""
        if not self.cfg.context_mult:
            return None, False
        if context is None:
            zeros = like.new_zeros(batch, self.cfg.context_length, self.cfg.channels)
            return zeros, True
        expected = (batch, self.cfg.channels, self.cfg.context_length)
        if tuple(context.shape) != expected:
            raise ValueError(f"expected context shaped {expected}, got {tuple(context.shape)}")
        return context.transpose(1, 2), False

    def _net_kwargs(self, context: torch.Tensor | None, like: torch.Tensor, guidance: float) -> dict[str, Any]:
        """The UNet's keyword arguments at sampling time: the context embedding and guidance."""
        embedding, unconditional = self._embedding(context, like.shape[0], like)
        if embedding is None:
            return {}
        kwargs: dict[str, Any] = {"embedding": embedding, "embedding_mask_proba": 1.0 if unconditional else 0.0}
        if not unconditional and guidance != 1.0:
            kwargs["embedding_scale"] = guidance
        return kwargs

    def context_from(self, previous: torch.Tensor | None) -> torch.Tensor | None:
        """The context for the next window from the latents before it (B, C, any length).

        Only the last ``context_length`` frames are used; a shorter history is zero-padded
        on the left (the song's start); ``None`` or an empty history means unconditional.
        """
        if previous is None or previous.shape[-1] == 0 or not self.cfg.context_mult:
            return None
        need = self.cfg.context_length
        recent = previous[..., -need:]
        return torch.nn.functional.pad(recent, (need - recent.shape[-1], 0))

    def _check(self, x: torch.Tensor, *, any_length: bool = False) -> None:
        """Training takes exactly one window; sampling any multiple of the UNet's total factor."""
        factor = self.cfg.unet.total_factor
        length_ok = x.dim() == 3 and (x.shape[2] % factor == 0 and x.shape[2] > 0 if any_length else x.shape[2] == self.cfg.window)
        if x.dim() != 3 or x.shape[1] != self.cfg.channels or not length_ok:
            frames = f"a multiple of {factor}" if any_length else str(self.cfg.window)
            raise ValueError(f"expected latents shaped (batch, {self.cfg.channels}, {frames}), got {tuple(x.shape)}")

    def loss(
        self,
        x: torch.Tensor,
        context: torch.Tensor | None = None,
        *,
        start: torch.Tensor | None = None,
        sigma: torch.Tensor | None = None,
        weight: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Training loss on a batch of windows (``start`` replaces the noise for residual levels).

        ``sigma`` (batch,) are the noise levels (default: uniform in [0, 1]); ``weight``
        (batch,) scales each window's error (default: all equal).
        """
        self._check(x)
        embedding, unconditional = self._embedding(context, x.shape[0], x)
        net: VNetwork = self.net
        if embedding is not None:
            dropout = 1.0 if unconditional else self.cfg.context_dropout
            net = functools.partial(self.net, embedding=embedding, embedding_mask_proba=dropout, generator=generator)
        return v_loss(net, x, start=start, sigma=sigma, weight=weight, generator=generator)

    @torch.no_grad()
    def generate(
        self,
        noise: torch.Tensor,
        context: torch.Tensor | None = None,
        *,
        steps: int = 50,
        guidance: float = 1.0,
        sampler: str = "dpm",
        init: torch.Tensor | None = None,
        init_strength: float = 0.0,
        known: torch.Tensor | None = None,
        known_mask: torch.Tensor | None = None,
        jumps: int = 0,
        generator: torch.Generator | None = None,
        progress: Callable[[], None] | None = None,
    ) -> torch.Tensor:
        """Sample latents per batch item from ``noise`` (or ``init`` at ``init_strength``).

        Usually one window long; a longer stretch (a multiple of the UNet's total factor) is
        denoised in one call, still cross-attending to one context. ``known`` latents where
        ``known_mask`` is True are kept and the rest inpainted (:func:`jbdiff.core.samplers.sample`).
        """
        self._check(noise, any_length=True)
        kwargs = self._net_kwargs(context, noise, guidance)
        return sample(
            self.net, noise, steps, sampler=sampler, init=init, init_strength=init_strength, known=known,
            known_mask=known_mask, jumps=jumps, generator=generator, progress=progress, **kwargs,
        )

    @torch.no_grad()
    def invert(
        self,
        x: torch.Tensor,
        context: torch.Tensor | None = None,
        *,
        steps: int = 50,
        guidance: float = 1.0,
        progress: Callable[[], None] | None = None,
    ) -> torch.Tensor:
        """The noise that :meth:`generate` with ``sampler="v"`` and the same context, steps and
        guidance turns back into ``x`` (:func:`jbdiff.core.samplers.invert`)."""
        self._check(x, any_length=True)
        return invert(self.net, x, steps, progress=progress, **self._net_kwargs(context, x, guidance))


def denoiser_section(cfg: DenoiserConfig, level: int, codec_fingerprint: str, steps: int | None) -> dict[str, Any]:
    """What ``levelN.yaml`` (or a bundle's ``levelN`` entry) records: the denoiser config, its
    level and role (residual below the coarsest level), the codec it fits, the steps trained."""
    return {
        "level": level,
        "residual": level < 2,
        "model": to_dict(cfg),
        "codec_fingerprint": codec_fingerprint,
        "steps": steps,
    }


def load_denoiser(path: str | os.PathLike[str], stage: str) -> LatentDenoiser:
    """A trained level (``level2``, ``level1`` or ``level0``) from a run folder or a bundle."""
    section = stage_section(path, stage)
    cfg = from_dict(DenoiserConfig, section.get("model", {}), f"{path}: {stage} model")
    model = load_stage_weights(LatentDenoiser(cfg), path, stage)
    assert isinstance(model, LatentDenoiser)
    return model
