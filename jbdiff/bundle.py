"""Model bundles: every trained stage in one folder, described by ``bundle.yaml``; written by
:func:`export_bundle`, read by :func:`load_bundle`.

``bundle.yaml`` holds each stage's section (its config, and for the codec the latent
normalisation statistics), the sample rate, the hops, a training-data note and the jbdiff
version; each stage's weights sit beside it as ``NAME.safetensors``.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from safetensors.torch import load_file, save_file

from jbdiff import __version__
from jbdiff.core.atomic import atomic_path
from jbdiff.core.audio import SAMPLE_RATE
from jbdiff.core.config import from_dict, load_yaml
from jbdiff.core.errors import JbdiffError
from jbdiff.core.stage_io import BUNDLE_YAML, save_stage, stage_section
from jbdiff.core.stages import DANCE_STAGE, LATENT_STAGES, STAGES, stage_level
from jbdiff.sampling_settings import SamplingSettings, preset_section
from levels.codec import Codec
from levels.codec_io import load_codec, save_codec
from levels.jbdiff_v1_checkpoint import load_jbdiff_v1_level, vqvae_from_jbdiff_v1
from levels.latent_denoiser import (
    DenoiserConfig,
    LatentDenoiser,
    denoiser_section,
    load_denoiser,
)
from upsampler.dance_refiner import dance_section, load_dance
from upsampler.dance_unet import DanceConfig, DanceUNet, load_dance_checkpoint

DEMO_BUNDLE = Path(__file__).resolve().parent / "demo_model"


@dataclass
class Stages:
    """The models of a bundle: the codec, the latent denoisers by level, and the Dance stage."""

    codec: Codec
    denoisers: dict[int, LatentDenoiser]
    dance: DanceUNet | None = None


@dataclass(frozen=True)
class Bundle:
    """A loaded bundle: its models, recommended sampling settings and each stage's fingerprint."""

    path: Path
    stages: Stages
    settings: SamplingSettings
    fingerprints: dict[str, str]


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def load_bundle(path: str | os.PathLike[str] | None, *, device: torch.device, dtype: torch.dtype) -> Bundle:
    """Load a model bundle folder (``None``: the demo bundle) onto ``device``; the codec stays float32."""
    folder = DEMO_BUNDLE if path is None else Path(path)
    if not (folder / BUNDLE_YAML).is_file():
        if path is None:
            raise JbdiffError("the demo model bundle is not installed with this copy of jbdiff; pass --model BUNDLE")
        if not folder.exists():
            raise JbdiffError(f"{folder}: model bundle not found")
        raise JbdiffError(f"{folder}: not a model bundle (no {BUNDLE_YAML}; make one with 'jbdiff export')")
    manifest = load_yaml(folder / BUNDLE_YAML)
    listed = manifest.get("stages")
    if not isinstance(listed, list) or "codec" not in listed:
        raise JbdiffError(f"{folder / BUNDLE_YAML}: no 'stages' list with a codec")
    sampling = manifest.get("sampling")
    settings = from_dict(SamplingSettings, sampling, f"{folder / BUNDLE_YAML}: sampling") if sampling else SamplingSettings()
    codec = load_codec(folder).to(device)
    denoisers = {
        stage_level(name): load_denoiser(folder, name).to(device, dtype) for name in LATENT_STAGES if name in listed
    }
    dance = load_dance(folder).to(device, dtype) if DANCE_STAGE in listed else None
    fingerprints = {"codec": codec.fingerprint()}
    fingerprints.update({name: _file_digest(folder / f"{name}.safetensors") for name in listed if name != "codec"})
    return Bundle(folder, Stages(codec, denoisers, dance), settings, fingerprints)


def import_stage(
    name: str,
    path: Path,
    folder: Path,
    *,
    level_config: DenoiserConfig | None = None,
    dance_config: DanceConfig | None = None,
) -> None:
    """Write stage ``name`` into ``folder`` from a published checkpoint file.

    The codec from OpenAI's ``vqvae.pth.tar``; a level from a Jukebox-Diffusion v1 ``.ckpt``
    (architecture ``level_config``, default v1's; its codec fingerprint is that of the VQ-VAE
    stored in the file); the Dance stage from a Harmonai Dance Diffusion ``.ckpt`` (its EMA
    weights; architecture ``dance_config``, default the published one). The steps trained
    are not known for these files (recorded as None).
    """
    if name == "codec":
        save_codec(load_codec(path), folder)
    elif name in LATENT_STAGES:
        denoiser = load_jbdiff_v1_level(path, level_config)
        codec = Codec(vqvae_from_jbdiff_v1(path))
        codec.refresh_normalisation()
        section = denoiser_section(denoiser.cfg, stage_level(name), codec.fingerprint(), steps=None)
        save_stage(denoiser, folder, name, section)
    else:
        net = load_dance_checkpoint(path, dance_config)
        save_stage(net, folder, name, dance_section(net.config, steps=None))


def export_bundle(
    runs: dict[str, str | os.PathLike[str]],
    out: str | os.PathLike[str],
    *,
    data_note: str = "",
    overwrite: bool = False,
    half: bool = False,
    sampling: dict[str, Any] | None = None,
    level_config: DenoiserConfig | None = None,
    dance_config: DanceConfig | None = None,
) -> Path:
    """Copy each stage from its run folder (or bundle) into ``out`` and write ``bundle.yaml``.

    ``runs`` maps stage names (``codec`` is required) to folders, or to published checkpoint
    files that :func:`import_stage` converts (``level_config`` and ``dance_config`` are their
    architectures). Every level must have been trained on latents of this very codec (same
    fingerprint), or the bundle is refused. ``half`` stores the diffusion stages' float
    weights as float16 (half the size; they load into float32 models unchanged); the codec
    stays float32 so its codes do not change. ``sampling`` is the bundle's recommended
    sampling settings (``SamplingSettings`` fields), which ``jbdiff continue`` and friends
    start from; without it, a bundle whose levels come from v1 checkpoints records v1's preset.
    """
    if sampling:
        from_dict(SamplingSettings, sampling, "sampling settings")  # refuse unknown or invalid fields now
    unknown = sorted(set(runs) - set(STAGES))
    if unknown:
        raise JbdiffError(f"unknown stage(s) {', '.join(unknown)}; use {', '.join(STAGES)}")
    if "codec" not in runs:
        raise JbdiffError("a bundle needs a codec (--codec)")
    target = Path(out)
    if target.exists() and any(target.iterdir()) and not overwrite:
        raise JbdiffError(f"{target}: already exists and is not empty (pass --overwrite to replace its stages)")
    files = {name: Path(path) for name, path in runs.items() if Path(path).is_file()}
    if not files:
        return _export(runs, target, data_note=data_note, half=half, sampling=sampling)
    if sampling is None and any(name in LATENT_STAGES for name in files):
        sampling = preset_section("v1")
    with tempfile.TemporaryDirectory(prefix=".import-", dir=target.parent if target.parent.exists() else None) as staging:
        converted = dict(runs)
        for name, path in files.items():
            converted[name] = Path(staging) / name
            import_stage(name, path, Path(converted[name]), level_config=level_config, dance_config=dance_config)
        return _export(converted, target, data_note=data_note, half=half, sampling=sampling)


def _export(
    runs: dict[str, str | os.PathLike[str]],
    target: Path,
    *,
    data_note: str,
    half: bool,
    sampling: dict[str, Any] | None,
) -> Path:
    sections = {name: stage_section(runs[name], name) for name in STAGES if name in runs}
    fingerprint = sections["codec"]["fingerprint"]
    for name, section in sections.items():
        used = section.get("codec_fingerprint")
        if used is not None and used != fingerprint:
            raise JbdiffError(
                f"{runs[name]}: {name} was trained on latents of codec {used}, but the bundle's codec is {fingerprint}"
            )
    target.mkdir(parents=True, exist_ok=True)
    for name in sections:
        source = Path(runs[name]) / f"{name}.safetensors"
        if not source.is_file():
            raise JbdiffError(f"{source}: weights not found")
        with atomic_path(target / source.name) as tmp:
            if half and name != "codec":
                save_file({k: v.half() if v.is_floating_point() else v for k, v in load_file(str(source)).items()}, str(tmp))
            else:
                shutil.copyfile(source, tmp)
    manifest: dict[str, Any] = {
        "jbdiff_version": __version__,
        "sample_rate": SAMPLE_RATE,
        "hops": sections["codec"]["hops"],
        "training_data": data_note,
        "weights_dtype": "float16" if half else "float32",
        "stages": list(sections),
        **sections,
    }
    if sampling:
        manifest["sampling"] = sampling
    with atomic_path(target / BUNDLE_YAML) as tmp:
        tmp.write_text(yaml.safe_dump(manifest, sort_keys=False))
    return target
