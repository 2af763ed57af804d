"""Shared fixtures: a tiny random-weight codec; ``synth_music`` re-exported for tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from jbdiff.core.synth import synth_music
from jbdiff.core.training import FitOptions
from jbdiff.sampling_settings import SamplingSettings, StageSettings
from levels.codec import Codec
from levels.codec_config import load_codec_config
from levels.vqvae import VQVAE

ROOT = Path(__file__).resolve().parents[1]
TINY_CODEC_CONFIG = ROOT / "configs" / "codec" / "tiny.yaml"

__all__ = ["FAST", "ROOT", "TINY_CODEC_CONFIG", "cpu_fit", "synth_music"]

# Few steps and one base window per pass: sampling settings for quick runs of the tiny bundle.
FAST = SamplingSettings(
    level2=StageSettings(3, guidance=2.0),
    level1=StageSettings(3, guidance=1.5, init_strength=0.34),
    level0=StageSettings(2, init_strength=0.5),
    dance=StageSettings(2, init_strength=0.5),
    window_multiplier=1,
    crossfade_samples=512,
)


def cpu_fit(max_steps: int) -> FitOptions:
    """Train ``max_steps`` steps on one CPU process, without a progress bar."""
    return FitOptions(max_steps=max_steps, accelerator="cpu", devices=1, progress=False)


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """One torch thread for a module: intra-op threads thrash on a busy 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_codec() -> Codec:
    """The tiny codec architecture with random weights and codebooks drawn from real encodings."""
    torch.manual_seed(0)
    vqvae = VQVAE(load_codec_config(TINY_CODEC_CONFIG).model)
    audio = torch.from_numpy(synth_music(2.0))[None]
    vqvae.train()
    with torch.no_grad():
        vqvae(audio)  # initialises each codebook from encoder outputs
    codec = Codec(vqvae).eval()
    codec.refresh_normalisation()
    return codec


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory: pytest.TempPathFactory, tiny_codec: Codec) -> Path:
    """A model bundle of every stage at the ``tiny`` sizes, with random weights."""
    from jbdiff.bundle import export_bundle
    from jbdiff.core.config import from_dict, load_yaml
    from jbdiff.core.stage_io import save_stage
    from jbdiff.core.stages import stage_level
    from levels.codec_io import save_codec
    from levels.latent_denoiser import DenoiserConfig, LatentDenoiser, denoiser_section
    from upsampler.dance_refiner import dance_section
    from upsampler.dance_unet import DanceConfig, DanceUNet

    root = tmp_path_factory.mktemp("tiny_bundle")
    torch.manual_seed(1)
    runs = {"codec": save_codec(tiny_codec, root / "codec")}
    for stage in ("level2", "level1", "level0"):
        cfg = from_dict(DenoiserConfig, load_yaml(ROOT / "configs" / stage / "tiny.yaml")["model"], stage)
        section = denoiser_section(cfg, stage_level(stage), tiny_codec.fingerprint(), steps=None)
        runs[stage] = save_stage(LatentDenoiser(cfg), root / stage, stage, section)
    dance_cfg = from_dict(DanceConfig, load_yaml(ROOT / "configs" / "dance" / "tiny.yaml")["model"], "dance")
    runs["dance"] = save_stage(DanceUNet(dance_cfg), root / "dance", "dance", dance_section(dance_cfg, steps=None))
    fast = {  # few steps, one base window per pass: the bundle's recommended settings, for quick runs
        "level2": {"steps": 3, "guidance": 2.0}, "level1": {"steps": 3, "init_strength": 0.34},
        "level0": {"steps": 2, "init_strength": 0.5}, "dance": {"steps": 2, "init_strength": 0.5},
        "window_multiplier": 1, "crossfade_samples": 512,
    }
    return export_bundle(runs, root / "bundle", data_note="random weights (tests)", sampling=fast)
