"""Composition root for training: each ``jbdiff train STAGE`` (codec, level2/1/0, dance) wires its
data, module and trainer."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytorch_lightning as pl

from jbdiff.core.audio import SAMPLE_RATE
from jbdiff.core.audio_dataset import (
    RandomCrops,
    crop_samples,
    fixed_crops,
    scan_audio_folder,
)
from jbdiff.core.config import load_yaml, to_dict
from jbdiff.core.errors import JbdiffError
from jbdiff.core.stage_io import save_stage
from jbdiff.core.stages import LATENT_STAGES, stage_level
from jbdiff.core.training import (
    DEFAULT_FIT,
    FitOptions,
    Validation,
    checkpoint_step,
    fit_stage,
    prepare_run_dir,
)
from levels.codec_config import CodecConfig, load_codec_config
from levels.codec_io import load_codec
from levels.codec_training import CodecTrainingModule, export_codec
from levels.denoiser_training import LevelTrainingModule, load_level_config
from levels.latent_dataset import LatentWindows
from levels.latent_denoiser import denoiser_section
from levels.latent_shards import LatentShards
from levels.level_validation import validation_windows
from upsampler.dance_training import (
    DanceTrainingModule,
    crop_length,
    export_dance,
    load_dance_config,
)

logger = logging.getLogger(__name__)


def train_codec(
    data_dir: str | os.PathLike[str],
    config_path: str | os.PathLike[str],
    run_dir: str | os.PathLike[str],
    *,
    options: FitOptions = DEFAULT_FIT,
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
        folder, crop_samples(cfg.train.sample_seconds, max(cfg.model.hops)), seed=cfg.train.seed, stream=checkpoint_step(resume)
    )
    module = CodecTrainingModule(cfg, run)
    fit_stage(
        module, data, run, cfg.train, export_codec, options, resume=resume, hparams=to_dict(cfg)
    )
    return run


def train_level(
    stage: str,
    latents_dir: str | os.PathLike[str],
    config_path: str | os.PathLike[str],
    run_dir: str | os.PathLike[str],
    *,
    codec_path: str | os.PathLike[str] | None = None,
    val_latents_dir: str | os.PathLike[str] | None = None,
    options: FitOptions = DEFAULT_FIT,
) -> Path:
    """Train (or resume) one latent level from pre-encoded shards; returns the run folder.

    ``level2`` is the base prior; ``level1`` and ``level0`` are residual upsamplers that start
    from the cached "level above, re-encoded here" codes. The codec (default: the one named in
    the shards' manifest) supplies the codebook and decodes the demo samples.
    ``val_latents_dir`` (shards of files kept out of training, same codec) turns on the
    held-out validation of the config's ``validation`` section: ``RUN/val.jsonl``,
    TensorBoard ``val/``, and the best weights by validation loss in ``RUN/best/``.
    """
    if stage not in LATENT_STAGES:
        raise JbdiffError(f"unknown stage '{stage}'; use one of {', '.join(LATENT_STAGES)}")
    level = stage_level(stage)
    cfg = load_level_config(config_path)
    shards = LatentShards(latents_dir)
    codec = load_codec(codec_path or shards.manifest["codec_source"])
    shards.check_codec(codec)
    if level >= codec.levels:
        raise JbdiffError(f"{stage}: the codec has only levels 0..{codec.levels - 1}")
    run = Path(run_dir)
    resume = prepare_run_dir(run, load_yaml(config_path), str(config_path))
    residual = level < codec.levels - 1
    shards.check_trainable(level, residual=residual)
    pl.seed_everything(cfg.train.seed, verbose=False)
    model = cfg.model
    data = LatentWindows(
        shards, level, model.window, model.context_mult, residual=residual, seed=cfg.train.seed, stream=checkpoint_step(resume)
    )
    codebook = codec.latent_codebook(level)
    module = LevelTrainingModule(cfg, level, codebook, residual=residual, run_dir=run, demo_codec=codec)
    fingerprint = codec.fingerprint()

    def export(trained: pl.LightningModule, folder: Path) -> None:
        assert isinstance(trained, LevelTrainingModule)
        save_stage(trained.ema, folder, stage, denoiser_section(trained.cfg.model, level, fingerprint, int(trained.global_step)))

    validation = None
    if val_latents_dir is not None:
        held_out = LatentShards(val_latents_dir)
        held_out.check_codec(codec)
        held_out.check_trainable(level, residual=residual)
        windows = validation_windows(
            held_out, level, model.window, model.context_mult, residual=residual, count=cfg.validation.windows
        )

        def evaluate(trained: pl.LightningModule) -> dict[str, object]:
            assert isinstance(trained, LevelTrainingModule)
            return trained.validate(windows)

        validation = Validation(run, cfg.validation.every, evaluate, export)

    fit_stage(
        module, data, run, cfg.train, export, options, resume=resume, hparams=to_dict(cfg), validation=validation
    )
    return run


def train_dance(
    data_dir: str | os.PathLike[str],
    config_path: str | os.PathLike[str],
    run_dir: str | os.PathLike[str],
    *,
    val_data_dir: str | os.PathLike[str] | None = None,
    options: FitOptions = DEFAULT_FIT,
) -> Path:
    """Train (or resume training) the Dance-Diffusion stage on a folder of audio; returns the run folder.

    Crops are stereo (mono files duplicated) of ``train.sample_seconds`` rounded up by
    :func:`upsampler.dance_training.crop_length`. The run folder doubles as the stage: ``dance.safetensors`` (EMA
    weights) + ``dance.yaml`` are refreshed at every checkpoint (:func:`upsampler.dance_refiner.load_dance`).
    ``val_data_dir`` (audio kept out of training) turns on the held-out validation of the
    config's ``validation`` section on fixed crops: ``RUN/val.jsonl``, TensorBoard ``val/``,
    and the best weights by validation loss in ``RUN/best/``.
    """
    cfg = load_dance_config(config_path)
    folder = scan_audio_folder(data_dir)
    held_out = scan_audio_folder(val_data_dir) if val_data_dir is not None else None
    run = Path(run_dir)
    resume = prepare_run_dir(run, load_yaml(config_path), str(config_path))
    length = crop_length(cfg.train.sample_seconds, cfg.model)
    logger.info(
        "training the dance stage on %d file(s), %.1f min of audio, in crops of %d samples (%.3f s: sample_seconds"
        " rounded up to a multiple of %d)",
        len(folder.files), folder.seconds / 60, length, length / SAMPLE_RATE, cfg.model.length_multiple,
    )
    if resume:
        logger.info("resuming from %s", resume)
    pl.seed_everything(cfg.train.seed, verbose=False)
    data = RandomCrops(folder, length, channels=2, seed=cfg.train.seed, stream=checkpoint_step(resume))
    module = DanceTrainingModule(cfg, run)
    validation = None
    if held_out is not None:
        crops = fixed_crops(held_out, length, cfg.validation.windows, channels=2)

        def evaluate(trained: pl.LightningModule) -> dict[str, object]:
            assert isinstance(trained, DanceTrainingModule)
            return trained.validate(crops)

        validation = Validation(run, cfg.validation.every, evaluate, export_dance)
    fit_stage(
        module, data, run, cfg.train, export_dance, options, resume=resume, hparams=to_dict(cfg), validation=validation
    )
    return run
