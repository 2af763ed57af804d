"""Model bundles: every trained stage in one folder, described by ``bundle.yaml``.

``bundle.yaml`` holds each stage's section (its config, and for the codec the latent
normalisation statistics), the sample rate, the hops, a training-data note and the jbdiff
version; each stage's weights sit beside it as ``NAME.safetensors``.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import yaml
from safetensors.torch import load_file, save_file

from jbdiff import SAMPLE_RATE, __version__
from jbdiff.atomic import atomic_path
from jbdiff.config import from_dict
from jbdiff.errors import JbdiffError
from jbdiff.sampling_settings import SamplingSettings
from jbdiff.stage_io import BUNDLE_YAML, stage_section

STAGES = ("codec", "level2", "level1", "level0", "dance")


def export_bundle(
    runs: dict[str, str | os.PathLike[str]],
    out: str | os.PathLike[str],
    *,
    data_note: str = "",
    overwrite: bool = False,
    half: bool = False,
    sampling: dict[str, Any] | None = None,
) -> Path:
    """Copy each stage from its run folder (or bundle) into ``out`` and write ``bundle.yaml``.

    ``runs`` maps stage names (``codec`` is required) to folders. Every level must have been
    trained on latents of this very codec (same fingerprint), or the bundle is refused.
    ``half`` stores the diffusion stages' float weights as float16 (half the size; they load
    into float32 models unchanged); the codec stays float32 so its codes do not change.
    ``sampling`` is the bundle's recommended sampling settings (``SamplingSettings`` fields),
    which ``jbdiff continue`` and friends start from.
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
