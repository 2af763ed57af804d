"""Model bundles: every trained stage in one folder, described by ``bundle.yaml``; written by
:func:`export_bundle`, read by :func:`load_bundle`.

``bundle.yaml`` holds each stage's section (its config, and for the codec the latent
normalisation statistics), the sample rate, the hops, a training-data note and the jbdiff
version; each stage's weights sit beside it as ``NAME.safetensors``, whose sha256 digest its
section records. Loading checks every digest, every level's codec fingerprint against the
codec, that the weights are finite, and that ``bundle.yaml`` holds no key it does not know.
"""

from __future__ import annotations

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
from jbdiff.core.stage_io import (
    BUNDLE_YAML,
    DIGEST,
    file_sha256,
    save_stage,
    stage_section,
)
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

_TOP_LEVEL_KEYS = frozenset({"jbdiff_version", "sample_rate", "hops", "training_data", "weights_dtype", "stages", "sampling", *STAGES})
_LEVEL_KEYS = frozenset({"level", "residual", "model", "codec_fingerprint", "steps", DIGEST})
SECTION_KEYS: dict[str, frozenset[str]] = {
    "codec": frozenset({"model", "sample_rate", "hops", "latent_mean", "latent_std", "fingerprint", DIGEST}),
    **dict.fromkeys(LATENT_STAGES, _LEVEL_KEYS),
    DANCE_STAGE: frozenset({"model", "sample_rate", "steps", DIGEST}),
}
"""The keys a stage's section may hold (what the codec, level and Dance section writers record)."""


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


def _unknown(keys: object, allowed: frozenset[str]) -> str:
    return ", ".join(sorted(str(k) for k in keys if k not in allowed))  # type: ignore[attr-defined]


def check_manifest(manifest: dict[str, Any], where: str) -> list[str]:
    """The stages ``manifest`` (a ``bundle.yaml``) lists, refusing unknown keys and stages in one sentence."""
    unknown = _unknown(manifest, _TOP_LEVEL_KEYS)
    if unknown:
        raise JbdiffError(f"{where}: unknown top-level key(s) {unknown}")
    listed = manifest.get("stages")
    if not isinstance(listed, list) or "codec" not in listed:
        raise JbdiffError(f"{where}: no 'stages' list with a codec")
    strangers = _unknown(listed, frozenset(STAGES))
    if strangers:
        raise JbdiffError(f"{where}: unknown stage(s) {strangers} in 'stages'; use some of {', '.join(STAGES)}")
    for name in STAGES:
        section = manifest.get(name)
        if name in listed and not isinstance(section, dict):
            raise JbdiffError(f"{where}: stage {name} is listed but has no section")
        if name not in listed and section is not None:
            raise JbdiffError(f"{where}: has a section for stage {name}, which 'stages' does not list")
        if isinstance(section, dict):
            unknown = _unknown(section, SECTION_KEYS[name])
            if unknown:
                raise JbdiffError(f"{where}: stage {name} has unknown key(s) {unknown}")
    return list(listed)


def _check_fingerprints(manifest: dict[str, Any], listed: list[str], codec: Codec, where: str) -> str:
    """The codec's fingerprint, refused unless the codec section and every level record that very one."""
    fingerprint = codec.fingerprint()
    if manifest["codec"].get("fingerprint") != fingerprint:
        raise JbdiffError(f"{where}: stage codec records fingerprint {manifest['codec'].get('fingerprint')}, but its weights are codec {fingerprint}")
    for name in LATENT_STAGES:
        used = manifest[name].get("codec_fingerprint") if name in listed else fingerprint
        if used != fingerprint:
            raise JbdiffError(f"{where}: stage {name} was trained on latents of codec {used}, but the bundle's codec is {fingerprint}")
    return fingerprint


def load_bundle(path: str | os.PathLike[str] | None, *, device: torch.device, dtype: torch.dtype) -> Bundle:
    """Load a model bundle folder (``None``: the demo bundle) onto ``device``; the codec stays float32.

    Every stage file must have the sha256 digest ``bundle.yaml`` records for it, every level
    the codec's fingerprint, and every weight must be finite; otherwise one sentence names the stage.
    """
    folder = DEMO_BUNDLE if path is None else Path(path)
    if not (folder / BUNDLE_YAML).is_file():
        if path is None:
            raise JbdiffError("the demo model bundle is not installed with this copy of jbdiff; pass --model BUNDLE")
        if not folder.exists():
            raise JbdiffError(f"{folder}: model bundle not found")
        raise JbdiffError(f"{folder}: not a model bundle (no {BUNDLE_YAML}; make one with 'jbdiff export')")
    where = str(folder / BUNDLE_YAML)
    manifest = load_yaml(folder / BUNDLE_YAML)
    listed = check_manifest(manifest, where)
    sampling = manifest.get("sampling")
    settings = from_dict(SamplingSettings, sampling, f"{where}: sampling") if sampling else SamplingSettings()
    codec = load_codec(folder).to(device)
    fingerprints = {"codec": _check_fingerprints(manifest, listed, codec, where)}
    denoisers = {
        stage_level(name): load_denoiser(folder, name).to(device, dtype) for name in LATENT_STAGES if name in listed
    }
    dance = load_dance(folder).to(device, dtype) if DANCE_STAGE in listed else None
    fingerprints.update({name: str(manifest[name][DIGEST])[:16] for name in listed if name != "codec"})
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


def _source_section(run: str | os.PathLike[str], name: str) -> dict[str, Any]:
    """Stage ``name``'s section in a run folder or bundle, without a digest (export records a new one)."""
    section = {key: value for key, value in stage_section(run, name).items() if key != DIGEST}
    unknown = _unknown(section, SECTION_KEYS[name])
    if unknown:
        raise JbdiffError(f"{run}: stage {name} has unknown key(s) {unknown}")
    return section


def _export(
    runs: dict[str, str | os.PathLike[str]],
    target: Path,
    *,
    data_note: str,
    half: bool,
    sampling: dict[str, Any] | None,
) -> Path:
    sections = {name: _source_section(runs[name], name) for name in STAGES if name in runs}
    fingerprint = sections["codec"]["fingerprint"]
    for name, section in sections.items():
        used = section.get("codec_fingerprint")
        if used is not None and used != fingerprint:
            raise JbdiffError(
                f"{runs[name]}: {name} was trained on latents of codec {used}, but the bundle's codec is {fingerprint}"
            )
    target.mkdir(parents=True, exist_ok=True)
    for name, section in sections.items():
        source = Path(runs[name]) / f"{name}.safetensors"
        if not source.is_file():
            raise JbdiffError(f"{source}: weights not found")
        with atomic_path(target / source.name) as tmp:
            if half and name != "codec":
                state = {k: v.half() if v.is_floating_point() else v for k, v in load_file(str(source)).items()}
                overflow = next((k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())), None)
                if overflow is not None:
                    raise JbdiffError(f"{source}: tensor {overflow} does not fit in float16 (or is not finite); export without --half")
                save_file(state, str(tmp))
            else:
                shutil.copyfile(source, tmp)
        section[DIGEST] = file_sha256(target / source.name)
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
