"""Composition root for training: each ``jbdiff train STAGE`` wires its data, module and trainer."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytorch_lightning as pl
from torch.utils.data import DataLoader

from jbdiff.audio_dataset import RandomCrops, scan_audio_folder
from jbdiff.config import load_yaml, to_dict
from jbdiff.training import build_trainer, checkpoint_step, prepare_run_dir
from levels.codec_config import CodecConfig, load_codec_config
from levels.codec_training import CodecTrainingModule, export_codec

logger = logging.getLogger(__name__)


def _crop_length(seconds: float, multiple: int) -> int:
    return max(multiple, int(seconds * 44100) // multiple * multiple)


def train_codec(
    data_dir: str | os.PathLike[str],
    config_path: str | os.PathLike[str],
    run_dir: str | os.PathLike[str],
    *,
    max_steps: int | None = None,
    accelerator: str = "auto",
    devices: int | str = "auto",
    strategy: str = "auto",
    precision: str | None = None,
    progress: bool = True,
) -> Path:
    """Train (or resume training) the VQ-VAE codec on a folder of audio; returns the run folder.

    The run folder doubles as a codec: ``codec.yaml`` + ``codec.safetensors`` are refreshed
    at every checkpoint.
    """
    cfg: CodecConfig = load_codec_config(config_path)
    run = Path(run_dir)
    resume = prepare_run_dir(run, load_yaml(config_path), str(config_path))
    folder = scan_audio_folder(data_dir)
    logger.info("training the codec on %d file(s), %.1f min of audio", len(folder.files), folder.seconds / 60)
    if resume:
        logger.info("resuming from %s", resume)
    pl.seed_everything(cfg.train.seed, verbose=False)
    data = RandomCrops(
        folder, _crop_length(cfg.train.sample_seconds, max(cfg.model.hops)), seed=cfg.train.seed, stream=checkpoint_step(resume)
    )
    loader = DataLoader(
        data, batch_size=cfg.train.batch_size, num_workers=cfg.train.num_workers, persistent_workers=cfg.train.num_workers > 0
    )
    module = CodecTrainingModule(cfg, run)
    module.hparams.update(to_dict(cfg))
    trainer = build_trainer(
        run, cfg.train, export_codec, max_steps=max_steps, accelerator=accelerator,
        devices=devices, strategy=strategy, precision=precision, progress=progress,
    )
    trainer.fit(module, loader, ckpt_path=resume)
    return run
