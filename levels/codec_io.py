"""Saving and loading codecs: run folders, model bundles and OpenAI ``vqvae.pth.tar`` files."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from safetensors.torch import load_file, save_file

from jbdiff.atomic import atomic_path
from jbdiff.config import from_dict, load_yaml, to_dict
from jbdiff.errors import JbdiffError
from jbdiff.state_dict import load_strict
from levels.codec import Codec
from levels.jukebox_checkpoint import load_jukebox_vqvae
from levels.vqvae import VQVAE, VQVAEConfig

CODEC_YAML = "codec.yaml"
CODEC_WEIGHTS = "codec.safetensors"
BUNDLE_YAML = "bundle.yaml"


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
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in codec.state_dict().items()}
    with atomic_path(out / CODEC_WEIGHTS) as tmp:
        save_file(state, str(tmp))
    with atomic_path(out / CODEC_YAML) as tmp:
        tmp.write_text(yaml.safe_dump(codec_section(codec), sort_keys=False))
    return out


def codec_from_section(section: dict[str, Any], weights: Path) -> Codec:
    """Build a codec from a ``codec.yaml`` mapping and its safetensors file."""
    cfg = from_dict(VQVAEConfig, section.get("model", {}), f"{weights.parent / CODEC_YAML}:model")
    codec = Codec(VQVAE(cfg))
    if not weights.is_file():
        raise JbdiffError(f"{weights}: codec weights not found")
    load_strict(codec, load_file(str(weights)), str(weights))
    return codec.eval()


def load_codec(path: str | os.PathLike[str]) -> Codec:
    """A codec from a run folder or export (``codec.yaml``), a bundle, or an OpenAI ``.pth.tar``."""
    p = Path(path)
    if p.is_file():
        codec = Codec(load_jukebox_vqvae(p))
        codec.refresh_normalisation()
        return codec.eval()
    if (p / CODEC_YAML).is_file():
        return codec_from_section(load_yaml(p / CODEC_YAML), p / CODEC_WEIGHTS)
    if (p / BUNDLE_YAML).is_file():
        bundle = load_yaml(p / BUNDLE_YAML)
        if not isinstance(bundle.get("codec"), dict):
            raise JbdiffError(f"{p / BUNDLE_YAML}: has no 'codec' section")
        return codec_from_section(bundle["codec"], p / CODEC_WEIGHTS)
    if not p.exists():
        raise JbdiffError(f"{p}: codec not found (expected a run folder, a model bundle or a vqvae.pth.tar file)")
    raise JbdiffError(f"{p}: not a codec (no {CODEC_YAML}, no {BUNDLE_YAML}, not a checkpoint file)")
