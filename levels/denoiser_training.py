"""The Lightning module that trains one latent level (the base prior or a residual upsampler)."""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from pytorch_lightning.utilities.types import OptimizerLRSchedulerConfig

from jbdiff.core.config import TrainConfig, load_config
from jbdiff.core.noise_levels import NoiseLevels
from jbdiff.core.spectrogram import spectrogram_image
from jbdiff.core.training import (
    EmaModule,
    ValidationConfig,
    adam,
    check_finite,
    lr_schedule,
    run_precision,
)
from levels.codec import Codec
from levels.latent_denoiser import DenoiserConfig, LatentDenoiser
from levels.level_validation import validate


@dataclass(frozen=True)
class LevelConfig:
    """``configs/level{0,1,2}/*.yaml``: ``model``, ``train``, EMA and demo settings."""

    model: DenoiserConfig = field(default_factory=DenoiserConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    noise_levels: NoiseLevels = field(default_factory=NoiseLevels)
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    ema_decay: float = 0.999
    ema_warmup: bool = False
    demo_every: int = 500
    demo_steps: int = 20


def load_level_config(path: str | os.PathLike[str]) -> LevelConfig:
    """Read a level YAML config; unknown keys are an error."""
    return load_config(LevelConfig, path)


def lookup_latents(codebook: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
    """(B, T) codes, ``-1`` for padding, -> (B, width, T) latents (zeros where padded)."""
    vectors = codebook[codes.clamp_min(0)] * (codes >= 0).unsqueeze(-1).to(codebook.dtype)
    return vectors.transpose(1, 2)


class LevelTrainingModule(EmaModule):
    """Trains a ``LatentDenoiser`` on code windows, keeping an EMA copy for export.

    ``codebook`` holds the level's normalised codebook vectors, so turning codes into
    latents is one lookup. ``demo_codec`` (optional) decodes demo samples for TensorBoard.
    """

    def __init__(
        self,
        cfg: LevelConfig,
        level: int,
        codebook: torch.Tensor,
        *,
        residual: bool,
        run_dir: Path | None = None,
        demo_codec: Codec | None = None,
    ) -> None:
        super().__init__()
        self.cfg, self.level, self.residual, self.run_dir = cfg, level, residual, run_dir
        self.denoiser = LatentDenoiser(cfg.model)
        self.ema = copy.deepcopy(self.denoiser).requires_grad_(False)
        self.register_buffer("codebook", codebook.clone(), persistent=False)
        self._demo = [demo_codec] if demo_codec is not None else []

    def _batch_latents(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor | None]:
        out: dict[str, torch.Tensor | None] = {k: lookup_latents(self.codebook, v) for k, v in batch.items()}
        out.setdefault("context", None)
        out.setdefault("start", None)
        return out

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        latents = self._batch_latents(batch)
        codes = latents["codes"]
        assert codes is not None
        sigma = self.cfg.noise_levels.draw(codes.shape[0], device=codes.device)
        weight = self.cfg.noise_levels.weight(sigma)
        loss = self.denoiser.loss(codes, latents["context"], start=latents["start"], sigma=sigma, weight=weight)
        check_finite(loss, self.global_step, self.run_dir)
        self.log("loss", loss, prog_bar=True)
        self.log("lr", self.cfg.train.lr * self.cfg.train.lr_factor(self.global_step))
        return loss

    def validate(self, windows: dict[str, torch.Tensor]) -> dict[str, object]:
        """The EMA weights' held-out errors by noise level (see ``levels.level_validation``)."""
        latents = self._batch_latents({k: v.to(self.device) for k, v in windows.items()})
        codes = latents["codes"]
        assert codes is not None
        return validate(self.ema, codes, latents["context"], latents["start"], self.cfg.validation)

    def configure_optimizers(self) -> OptimizerLRSchedulerConfig:
        optimizer = adam(self.denoiser.parameters(), self.cfg.train.lr, decoupled=True, precision=run_precision(self))
        return lr_schedule(optimizer, self.cfg.train)

    def ema_pair(self) -> tuple[torch.nn.Module, torch.nn.Module, float]:
        """With ``ema_warmup`` the decay is at most (1 + step) / (10 + step): early EMA weights
        follow the live ones instead of keeping the random initialisation for thousands of steps."""
        decay = self.cfg.ema_decay
        if self.cfg.ema_warmup:
            decay = min(decay, (1 + self.global_step) / (10 + self.global_step))
        return self.ema, self.denoiser, decay

    @torch.no_grad()
    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self._demo and self.demo_due(batch_idx, self.cfg.demo_every):
            self._log_demo(batch)

    def _log_demo(self, batch: dict[str, torch.Tensor]) -> None:
        """Sample one window with the EMA weights, decode it, and log audio + spectrogram."""
        experiment = getattr(self.logger, "experiment", None)
        if experiment is None:
            return
        latents = self._batch_latents({k: v[:1] for k, v in batch.items()})
        generator = torch.Generator(device=self.device).manual_seed(self.global_step)
        target = latents["codes"]
        assert target is not None
        start = latents["start"]
        noise = start if start is not None else torch.randn(target.shape, generator=generator, device=self.device)
        sample = self.ema.generate(
            noise, latents["context"], steps=self.cfg.demo_steps, init=start, init_strength=0.0 if start is None else 0.5
        )
        codec = self._demo[0].to(self.device)
        audio = codec.decode(self.level, sample)[0, 0].float().cpu()
        experiment.add_audio("demo/audio", audio[None], self.global_step, sample_rate=codec.sample_rate)
        experiment.add_image("demo/spectrogram", spectrogram_image(audio), self.global_step)
