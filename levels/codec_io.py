"""Saving and loading codecs: run folders, model bundles and OpenAI ``vqvae.pth.tar`` files."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from jbdiff.core.config import from_dict, to_dict
from jbdiff.core.errors import JbdiffError
from jbdiff.core.stage_io import load_stage_weights, save_stage, stage_section
from levels.codec import Codec
from levels.jukebox_checkpoint import load_jukebox_vqvae
from levels.vqvae import VQVAE, VQVAEConfig

CODEC = "codec"


def codec_section(codec: Codec) -> dict[str, Any]:
    """What a ``codec.yaml`` (or a bundle's ``codec`` entry) records about ``codec``."""
    return {
        "model": to_dict(codec.cfg),
        "sample_rate": codec.sample_rate,
        "hops": list(codec.hops),
        "latent_mean": [float(v) for v in codec.latent_mean],
        "latent_std": [float(v) for v in codec.latent_std],
        "fingerprint": codec.fingerprint(),
    }


def save_codec(codec: Codec, folder: str | os.PathLike[str]) -> Path:
    """Write ``codec.safetensors`` and ``codec.yaml`` into ``folder`` (each atomically)."""
    return save_stage(codec, folder, CODEC, codec_section(codec))


def load_codec(path: str | os.PathLike[str]) -> Codec:
    """A codec from a run folder or export (``codec.yaml``), a bundle, or an OpenAI ``.pth.tar``."""
    p = Path(path)
    if p.is_file():
        codec = Codec(load_jukebox_vqvae(p))
        codec.refresh_normalisation()
        return codec.eval()
    if not p.exists():
        raise JbdiffError(f"{p}: codec not found (expected a run folder, a model bundle or a vqvae.pth.tar file)")
    section = stage_section(p, CODEC)
    cfg = from_dict(VQVAEConfig, section.get("model", {}), f"{p}: codec model")
    codec = load_stage_weights(Codec(VQVAE(cfg)), p, CODEC)
    assert isinstance(codec, Codec)
    return codec
