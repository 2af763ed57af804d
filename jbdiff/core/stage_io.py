"""One trained stage on disk: ``NAME.safetensors`` (weights) + ``NAME.yaml`` (its config).

Run folders and model bundles both hold stages this way; a bundle additionally lists every
stage's section in ``bundle.yaml``.
"""

from __future__ import annotations

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


def load_stage_weights(module: nn.Module, folder: str | os.PathLike[str], name: str) -> nn.Module:
    """Load ``NAME.safetensors`` from ``folder`` into ``module`` strictly."""
    weights = Path(folder) / f"{name}.safetensors"
    if not weights.is_file():
        raise JbdiffError(f"{weights}: weights not found")
    try:
        state: dict[str, torch.Tensor] = load_file(str(weights))
    except (SafetensorError, OSError) as error:
        raise JbdiffError(f"{weights}: not a readable safetensors file ({error})") from error
    load_strict(module, state, str(weights))
    return module.eval()
