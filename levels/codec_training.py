"""The Lightning module that trains the VQ-VAE codec."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch

from jbdiff.core.training import adam, check_finite, run_precision
from levels.codec import Codec
from levels.codec_config import CodecConfig
from levels.codec_io import save_codec
from levels.codec_loss import codec_loss
from levels.vqvae import VQVAE


class CodecTrainingModule(pl.LightningModule):
    """Trains every level's encoder, codebook and decoder together on audio crops."""

    def __init__(self, cfg: CodecConfig, run_dir: Path | None = None) -> None:
        super().__init__()
        self.cfg, self.run_dir = cfg, run_dir
        self.vqvae = VQVAE(cfg.model)
        self._pending_ema: list[dict[str, torch.Tensor]] | None = None

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        outputs, commits, stats = self.vqvae(batch)
        loss, logs = codec_loss(batch, outputs, commits, self.cfg.loss)
        check_finite(loss, self.global_step, self.run_dir)
        self.log("loss", loss, prog_bar=True)
        for level, level_stats in enumerate(stats):
            logs[f"usage/l{level}"] = level_stats["usage"] / self.cfg.model.l_bins
            logs[f"entropy/l{level}"] = level_stats["entropy"]
        self.log_dict({f"train/{k}": v for k, v in logs.items()})
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return adam(self.vqvae.parameters(), self.cfg.train.lr, precision=run_precision(self))

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["codebook_ema"] = [block.ema_state() for block in self.vqvae.bottleneck.level_blocks]

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self._pending_ema = checkpoint.get("codebook_ema")

    def on_train_start(self) -> None:
        """Restore the codebooks' EMA statistics (after Lightning loaded the weights)."""
        if self._pending_ema:
            for block, state in zip(self.vqvae.bottleneck.level_blocks, self._pending_ema):
                block.load_ema_state({k: v.to(block.k.device) for k, v in state.items()})
            self._pending_ema = None

    def to_codec(self) -> Codec:
        """A CPU copy of the current weights as a Codec, normalised from its codebooks."""
        codec = Codec(copy.deepcopy(self.vqvae).float().cpu()).eval()
        codec.refresh_normalisation()
        return codec


def export_codec(module: pl.LightningModule, run_dir: Path) -> None:
    """Write the module's codec (``codec.safetensors`` + ``codec.yaml``) into the run folder."""
    assert isinstance(module, CodecTrainingModule)
    save_codec(module.to_codec(), run_dir)
