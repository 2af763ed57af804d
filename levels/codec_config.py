"""The codec's YAML config: architecture, loss and training settings."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from jbdiff.core.config import TrainConfig, load_config
from levels.codec_loss import CodecLossConfig
from levels.vqvae import VQVAEConfig


@dataclass(frozen=True)
class CodecConfig:
    """``configs/codec/*.yaml``: ``model`` (VQVAEConfig), ``loss`` and ``train`` sections."""

    model: VQVAEConfig = field(default_factory=VQVAEConfig)
    loss: CodecLossConfig = field(default_factory=CodecLossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


def load_codec_config(path: str | os.PathLike[str]) -> CodecConfig:
    """Read a codec YAML config; unknown keys are an error."""
    return load_config(CodecConfig, path)
