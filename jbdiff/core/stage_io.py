"""One trained stage on disk: ``NAME.safetensors`` (weights) + ``NAME.yaml`` (its config).

Run folders and model bundles both hold stages this way; a bundle keeps every stage's section
in ``bundle.yaml`` instead, with the sha256 digest of the stage's file, which every load from
a bundle checks before reading the weights.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import torch
import yaml
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from jbdiff.core.atomic import atomic_path
from jbdiff.core.config import load_yaml
from jbdiff.core.errors import JbdiffError
from jbdiff.core.state_dict import load_strict

BUNDLE_YAML = "bundle.yaml"
DIGEST = "sha256"
"""The key of a bundle stage section that holds the sha256 digest of the stage's file."""


def save_stage(module: nn.Module, folder: str | os.PathLike[str], name: str, section: dict[str, Any]) -> Path:
    """Write ``module``'s weights and ``section`` into ``folder`` (each file atomically)."""
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    # clone: safetensors refuses tensors shared under two names (UNetV0 registers one layer twice)
    state = {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}
    with atomic_path(out / f"{name}.safetensors") as tmp:
        save_file(state, str(tmp))
    with atomic_path(out / f"{name}.yaml") as tmp:
        tmp.write_text(yaml.safe_dump(section, sort_keys=False))
    return out


def stage_section(folder: str | os.PathLike[str], name: str) -> dict[str, Any]:
    """The config section of stage ``name`` in a run folder (``NAME.yaml``) or a bundle."""
    p = Path(folder)
    if (p / f"{name}.yaml").is_file():
        return load_yaml(p / f"{name}.yaml")
    if (p / BUNDLE_YAML).is_file():
        section = load_yaml(p / BUNDLE_YAML).get(name)
        if not isinstance(section, dict):
            raise JbdiffError(f"{p / BUNDLE_YAML}: has no '{name}' section")
        return section
    if not p.exists():
        raise JbdiffError(f"{p}: not found (expected a run folder or a model bundle with a '{name}' stage)")
    raise JbdiffError(f"{p}: holds no '{name}' stage (no {name}.yaml, no {BUNDLE_YAML})")


def file_sha256(path: str | os.PathLike[str]) -> str:
    """The sha256 digest of a file, in hex."""
    with Path(path).open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def _in_bundle(folder: Path, name: str) -> bool:
    """Whether stage ``name`` of ``folder`` is described by ``bundle.yaml`` (not by a run's ``NAME.yaml``)."""
    return not (folder / f"{name}.yaml").is_file() and (folder / BUNDLE_YAML).is_file()


def verify_stage_file(folder: str | os.PathLike[str], name: str) -> None:
    """Refuse a bundle's ``NAME.safetensors`` unless it has the digest ``bundle.yaml`` records for it.

    Stage files of run folders carry no digest and pass as they are.
    """
    p = Path(folder)
    if not _in_bundle(p, name):
        return
    recorded = stage_section(p, name).get(DIGEST)
    if not isinstance(recorded, str):
        raise JbdiffError(
            f"{p / BUNDLE_YAML}: stage {name} records no sha256 digest of {name}.safetensors (exported by an older "
            "jbdiff); export the bundle again with 'jbdiff export --codec BUNDLE --level2 BUNDLE ... --out NEW'"
        )
    if file_sha256(p / f"{name}.safetensors") != recorded:
        raise JbdiffError(
            f"{p / f'{name}.safetensors'}: does not match the sha256 digest {BUNDLE_YAML} records for stage {name} "
            "(the file was changed or swapped since export)"
        )


def load_stage_weights(module: nn.Module, folder: str | os.PathLike[str], name: str) -> nn.Module:
    """Load ``NAME.safetensors`` from ``folder`` into ``module`` strictly, after checking its digest in a bundle."""
    p = Path(folder)
    weights = p / f"{name}.safetensors"
    if not weights.is_file():
        raise JbdiffError(f"{weights}: weights not found")
    verify_stage_file(p, name)
    try:
        state: dict[str, torch.Tensor] = load_file(str(weights))
    except (SafetensorError, OSError) as error:
        raise JbdiffError(f"{weights}: not a readable safetensors file ({error})") from error
    described = BUNDLE_YAML if _in_bundle(p, name) else f"{name}.yaml"
    load_strict(module, state, str(weights), model=f"the {name} model that {described} describes")
    return module.eval()
