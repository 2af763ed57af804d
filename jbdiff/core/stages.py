"""The stage table: the names of a bundle's stages, which every file name, option and section follows."""

from __future__ import annotations

LATENT_STAGES: tuple[str, ...] = ("level2", "level1", "level0")
"""The latent levels' stages, coarsest first: the base prior, then the residual upsamplers."""
DANCE_STAGE = "dance"
SAMPLING_STAGES: tuple[str, ...] = (*LATENT_STAGES, DANCE_STAGE)
"""The stages a piece is sampled through, in order."""
STAGES: tuple[str, ...] = ("codec", *SAMPLING_STAGES)
"""Every stage a model bundle holds: the one stage table that names, files and options follow."""


def stage_name(level: int) -> str:
    """The stage of latent level ``level`` (``level2`` for 2)."""
    return f"level{level}"


def stage_level(name: str) -> int:
    """The latent level of stage ``name`` (2 for ``level2``)."""
    if name not in LATENT_STAGES:
        raise ValueError(f"'{name}' is not a latent level's stage")
    return int(name.removeprefix("level"))
