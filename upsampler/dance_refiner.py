"""The Dance-Diffusion stage at inference: refine mono audio into stereo, and load a trained stage."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from jbdiff.core.audio import SAMPLE_RATE
from jbdiff.core.config import from_dict, to_dict
from jbdiff.core.errors import JbdiffError
from jbdiff.core.samplers import sample
from jbdiff.core.stage_io import load_stage_weights, stage_section
from jbdiff.core.stages import DANCE_STAGE
from upsampler.dance_unet import DanceConfig, DanceUNet

__all__ = ["dance_section", "load_dance", "padded_length", "refine_stereo"]

def padded_length(cfg: DanceConfig, samples: int) -> int:
    """``samples`` rounded up to a multiple of the net's ``length_multiple``, at least its ``min_length``."""
    multiple = cfg.length_multiple
    return max(cfg.min_length, -(-samples // multiple) * multiple)


def refine_stereo(
    net: DanceUNet,
    audio: torch.Tensor,
    *,
    steps: int,
    init_strength: float,
    sampler: str = "dpm",
    generator: torch.Generator,
    known: torch.Tensor | None = None,
    known_mask: torch.Tensor | None = None,
    progress: Callable[[], None] | None = None,
) -> torch.Tensor:
    """Re-noise ``audio`` (B, 1, T) or (B, 2, T) and denoise it with ``net`` into stereo (B, 2, T).

    ``known`` stereo audio (B, 2, T) is kept where ``known_mask`` (B or 1, 1, T) is True and
    the rest refined to fit it (inpainting).

    Mono input is duplicated onto both channels. The audio is zero-padded at the end to a
    length the net accepts (:func:`padded_length`) and trimmed back to T afterwards. The noise
    comes from ``generator`` (on ``audio``'s device), so the same seed gives the same output.

    ``init_strength`` follows :mod:`jbdiff.core.samplers`: the fraction of the ``steps`` skipped, so
    sampling starts from the input noised to sigma = 1 - init_strength (0: pure noise, the input
    is ignored; 1: the input is returned as is). The anchor (Jukebox-Diffusion v1,
    ``jbdiff-sample-v1.yaml``: 150 steps, init strength 0.15-0.23) uses the same convention: its
    ``DDModel.sample`` sets ``noise_level = 1 - init_strength``, i.e. it starts at noise 0.77-0.85.
    So the anchor's setting is ``init_strength`` 0.15-0.23 here, not 0.77-0.85 (that would keep
    only 15-23 % noise). Its 150 steps were a crash-shaped schedule over [0, 1] cut at the noise
    level (125-134 evaluations); here ``steps=150`` with 0.23-0.15 runs 116-128.
    """
    cfg = net.config
    if cfg.io_channels != 2:
        raise ValueError(f"refine_stereo needs a stereo net (io_channels 2), got io_channels {cfg.io_channels}")
    if audio.ndim != 3 or audio.shape[1] not in (1, 2):
        raise ValueError(f"expected audio shaped (batch, 1 or 2, samples), got {tuple(audio.shape)}")
    length = audio.shape[2]
    stereo = audio.expand(-1, 2, -1)
    init = F.pad(stereo, (0, padded_length(cfg, length) - length))
    noise = torch.randn(init.shape, generator=generator, device=init.device, dtype=init.dtype)
    keep: dict[str, torch.Tensor] = {}
    if known is not None and known_mask is not None:
        pad = (0, init.shape[-1] - length)
        keep = {"known": F.pad(known.to(init), pad), "known_mask": F.pad(known_mask.float(), pad) > 0.5}
    out = sample(net, noise, steps, sampler=sampler, init=init, init_strength=init_strength, progress=progress, **keep)
    return out[:, :, :length]


def dance_section(cfg: DanceConfig, steps: int | None) -> dict[str, Any]:
    """What ``dance.yaml`` (or a bundle's ``dance`` entry) records: the net's config, the sample
    rate and the steps trained."""
    return {"model": to_dict(cfg), "sample_rate": SAMPLE_RATE, "steps": steps}


def load_dance(path: str | os.PathLike[str]) -> DanceUNet:
    """The trained Dance-Diffusion net of a run folder or model bundle (its ``dance`` stage), in eval mode."""
    section = stage_section(path, DANCE_STAGE)
    model = section.get("model")
    if not isinstance(model, dict):
        raise JbdiffError(f"{path}: the '{DANCE_STAGE}' stage config has no 'model' mapping")
    rate = section.get("sample_rate", SAMPLE_RATE)
    if rate != SAMPLE_RATE:
        raise JbdiffError(f"{path}: the '{DANCE_STAGE}' stage was trained at {rate} Hz, but jbdiff works at {SAMPLE_RATE} Hz")
    net = DanceUNet(from_dict(DanceConfig, model, f"{path}: {DANCE_STAGE}.model"))
    load_stage_weights(net, path, DANCE_STAGE)
    return net.eval()
