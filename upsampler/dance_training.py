"""Training the Dance-Diffusion stage: Harmonai's stereo waveform UNet on random stereo crops.

The recipe follows Harmonai's ``sample-generator`` trainer (``train_uncond.py`` @ 6a3402d):
v-objective, noise levels drawn through its "crash" schedule, Adam, and an EMA copy of the
net that is the one exported and sampled. The Lightning state dict uses that trainer's names
(``diffusion.*``, ``diffusion_ema.*``), so a run's ``last.ckpt`` also loads with
:func:`upsampler.dance_unet.load_dance_checkpoint`.
"""

from __future__ import annotations

import copy
import io
import logging
import math
import os
import wave
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from tensorboard.compat.proto.summary_pb2 import Summary
from torch import Tensor

from jbdiff.core.audio import SAMPLE_RATE
from jbdiff.core.audio_dataset import crop_samples
from jbdiff.core.config import TrainConfig, load_config
from jbdiff.core.diffusion import noise_level_errors, v_loss
from jbdiff.core.spectrogram import spectrogram_image
from jbdiff.core.stage_io import save_stage
from jbdiff.core.stages import DANCE_STAGE
from jbdiff.core.training import (
    EmaModule,
    ValidationConfig,
    adam,
    check_finite,
    run_precision,
)
from upsampler.dance_refiner import dance_section, refine_stereo
from upsampler.dance_unet import DanceConfig, DanceUNet

__all__ = [
    "DanceStageConfig",
    "DanceTrainingModule",
    "crash_sigma",
    "crop_length",
    "export_dance",
    "load_dance_config",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DanceStageConfig:
    """``configs/dance/*.yaml``: ``model``, ``train``, EMA, demo and held-out ``validation`` settings.

    Demos refine a mono mix of a training crop with ``demo_steps`` steps from ``init_strength``
    (the :func:`upsampler.dance_refiner.refine_stereo` convention) every ``demo_every`` steps
    (0: never).
    """

    model: DanceConfig = field(default_factory=DanceConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    ema_decay: float = 0.995
    demo_every: int = 1000
    demo_steps: int = 50
    init_strength: float = 0.23
    validation: ValidationConfig = field(default_factory=ValidationConfig)

    def __post_init__(self) -> None:
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        if self.demo_every < 0:
            raise ValueError(f"demo_every must be >= 0, got {self.demo_every}")
        if self.demo_steps < 1:
            raise ValueError(f"demo_steps must be >= 1, got {self.demo_steps}")
        if not 0.0 <= self.init_strength <= 1.0:
            raise ValueError(f"init_strength must be in [0, 1], got {self.init_strength}")


def load_dance_config(path: str | os.PathLike[str]) -> DanceStageConfig:
    """Read a Dance-Diffusion YAML config; unknown keys are an error."""
    return load_config(DanceStageConfig, path)


def crop_length(seconds: float, cfg: DanceConfig) -> int:
    """Samples per training crop: ``seconds`` at 44.1 kHz, rounded UP to a length the net accepts.

    That is a multiple of ``cfg.length_multiple`` (2**(depth-1)) and at least ``cfg.min_length``;
    e.g. 1.486 s with the published depth 14 gives 65536 samples.
    """
    return crop_samples(seconds, cfg.length_multiple, minimum=cfg.min_length, round_up=True)


def crash_sigma(u: Tensor) -> Tensor:
    """Harmonai's "crash" schedule: uniform ``u`` in [0, 1] -> sigma = asin(sin(u pi / 2)^2) * 2 / pi.

    It keeps sigma in [0, 1] but draws low noise levels more often (u = 0.5 gives 1/3).
    """
    return torch.asin(torch.sin(u * (math.pi / 2)) ** 2) * (2 / math.pi)


def _stereo_audio_summary(tag: str, audio: Tensor) -> Summary:
    """A TensorBoard audio summary holding ``audio`` (2, T) as a 16-bit stereo wav."""
    pcm = (audio.float().clamp(-1, 1).t().numpy() * np.iinfo(np.int16).max).astype("<i2")
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(audio.shape[0])
        out.setsampwidth(2)
        out.setframerate(SAMPLE_RATE)
        out.writeframes(pcm.tobytes())
    encoded = Summary.Audio(
        sample_rate=SAMPLE_RATE,
        num_channels=audio.shape[0],
        length_frames=audio.shape[1],
        encoded_audio_string=buffer.getvalue(),
        content_type="audio/wav",
    )
    return Summary(value=[Summary.Value(tag=tag, audio=encoded)])


class DanceTrainingModule(EmaModule):
    """Trains a :class:`DanceUNet` (``diffusion``) on stereo crops, keeping an EMA copy (``diffusion_ema``)."""

    def __init__(self, cfg: DanceStageConfig, run_dir: Path | None = None) -> None:
        super().__init__()
        self.cfg, self.run_dir = cfg, run_dir
        self.diffusion = DanceUNet(cfg.model)
        self.diffusion_ema = copy.deepcopy(self.diffusion).requires_grad_(False)

    def training_step(self, batch: Tensor, batch_idx: int) -> Tensor:
        sigma = crash_sigma(torch.rand(batch.shape[0], device=batch.device))
        loss = v_loss(self.diffusion, batch, sigma=sigma)
        check_finite(loss, self.global_step, self.run_dir)
        self.log("loss", loss, prog_bar=True)
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return adam(self.diffusion.parameters(), self.cfg.train.lr, precision=run_precision(self))

    @torch.no_grad()
    def validate(self, crops: Tensor) -> dict[str, Any]:
        """The EMA net's held-out errors by noise level on stereo ``crops`` (N, 2, T), fixed noise.

        The trivial predictor answers silence (``zero_rmse`` is the crops' RMS).
        """
        generator = torch.Generator(device="cpu").manual_seed(self.cfg.validation.seed)
        crops = crops.to(self.device)
        noise = torch.randn(crops.shape, generator=generator).to(crops)
        return noise_level_errors(self.diffusion_ema, crops, noise, crops, self.cfg.validation.bins)

    def ema_pair(self) -> tuple[torch.nn.Module, torch.nn.Module, float]:
        return self.diffusion_ema, self.diffusion, self.cfg.ema_decay

    @torch.no_grad()
    def on_train_batch_end(self, outputs: Any, batch: Tensor, batch_idx: int) -> None:
        if self.demo_due(batch_idx, self.cfg.demo_every):
            self._log_demo(batch[:1])

    def _log_demo(self, item: Tensor) -> None:
        """Refine the mono mix of ``item`` (1, 2, T) with the EMA net; log input, stereo result, spectrogram."""
        experiment = getattr(self.logger, "experiment", None)
        if experiment is None:
            return
        step = self.global_step
        mono = item.mean(dim=1, keepdim=True)
        generator = torch.Generator(device=self.device).manual_seed(step)
        stereo = refine_stereo(
            self.diffusion_ema, mono, steps=self.cfg.demo_steps, init_strength=self.cfg.init_strength, generator=generator
        )[0].float().cpu()
        experiment.add_audio("demo/mono_input", mono[0].float().cpu().clamp(-1, 1), step, sample_rate=SAMPLE_RATE)
        experiment.file_writer.add_summary(_stereo_audio_summary("demo/stereo", stereo), step)
        experiment.add_image("demo/spectrogram", spectrogram_image(stereo), step)


def export_dance(module: pl.LightningModule, run_dir: Path) -> None:
    """Write the EMA net (``dance.safetensors``) and its section (``dance.yaml``) into the run folder."""
    assert isinstance(module, DanceTrainingModule)
    save_stage(module.diffusion_ema, run_dir, DANCE_STAGE, dance_section(module.cfg.model, int(module.global_step)))
