"""Shared fixtures: a tiny random-weight codec; ``synth_music`` re-exported for tests."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from jbdiff.synth import synth_music
from levels.codec import Codec
from levels.codec_config import load_codec_config
from levels.vqvae import VQVAE

ROOT = Path(__file__).resolve().parents[1]
TINY_CODEC_CONFIG = ROOT / "configs" / "codec" / "tiny.yaml"

__all__ = ["ROOT", "TINY_CODEC_CONFIG", "synth_music"]


@pytest.fixture(scope="session")
def tiny_codec() -> Codec:
    """The tiny codec architecture with random weights and codebooks drawn from real encodings."""
    torch.manual_seed(0)
    vqvae = VQVAE(load_codec_config(TINY_CODEC_CONFIG).model)
    audio = torch.from_numpy(synth_music(2.0))[None]
    vqvae.train()
    with torch.no_grad():
        vqvae(audio)  # initialises each codebook from encoder outputs
    codec = Codec(vqvae).eval()
    codec.refresh_normalisation()
    return codec
