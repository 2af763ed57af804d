"""``jbdiff export`` turns published files into a bundle that ``jbdiff continue`` runs.

The files are written in the published layouts: OpenAI's ``vqvae.pth.tar`` (the 5b VQ-VAE,
``{"model": {"module." + key: tensor}}``), Jukebox-Diffusion v1 level ``.ckpt`` files
(``diffusion.net.*`` and its two aliases, ``vqvae.*``) and a Harmonai Dance Diffusion ``.ckpt``
(``diffusion.*`` and ``diffusion_ema.*``). The networks are small so the test runs in seconds;
their architectures reach the export through ``--level-config`` and ``--dance-config``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import soundfile as sf
import torch
import yaml
from safetensors.torch import load_file

from jbdiff.cli import main
from jbdiff.core.audio import save_audio
from jbdiff.core.config import to_dict
from jbdiff.core.unet import UNetConfig
from jbdiff.sampling_settings import preset_section
from levels.latent_denoiser import DenoiserConfig, LatentDenoiser
from levels.vqvae import VQVAE, VQVAEConfig
from tests.conftest import synth_music
from upsampler.dance_unet import DanceConfig, DanceUNet

pytestmark = pytest.mark.usefixtures("one_thread")

LEVEL = DenoiserConfig(
    unet=UNetConfig(
        in_channels=64, channels=(16, 16, 32), factors=(1, 2, 2), items=(1, 1, 1), attentions=(0, 0, 1),
        cross_attentions=(0, 1, 1), attention_heads=2, attention_features=8, embedding_features=64,
        embedding_max_length=32, use_embedding_cfg=True, resnet_groups=4, modulation_features=32,
        resnet_dilation_factor=3, resnet_style="v1-fork",
    ),
    window=16,
    context_mult=2,
)
DANCE = DanceConfig(depth=5, n_attn_layers=1, channels=(16, 32, 32, 64, 64))


def _vqvae_state(seed: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return VQVAE(VQVAEConfig()).state_dict()


def _write_openai_vqvae(path: Path, state: dict[str, torch.Tensor]) -> Path:
    torch.save({"model": {"module." + k: v for k, v in state.items()}, "step": 0}, path)
    return path


def _write_v1_level(path: Path, denoiser: LatentDenoiser, vqvae: dict[str, torch.Tensor]) -> Path:
    """What v1's Lightning saves: the UNet under ``diffusion.net.`` and two aliases, plus ``vqvae.*``."""
    net = denoiser.net.state_dict()
    state = {f"diffusion.{prefix}{k}": v for prefix in ("net.", "diffusion.net.", "sampler.net.") for k, v in net.items()}
    state |= {"vqvae." + k: v for k, v in vqvae.items()}
    torch.save({"epoch": 1, "global_step": 10, "pytorch-lightning_version": "1.7.0", "state_dict": state}, path)
    return path


def _write_dance(path: Path, net: DanceUNet) -> Path:
    state = {f"{prefix}{k}": v for prefix in ("diffusion.", "diffusion_ema.") for k, v in net.state_dict().items()}
    torch.save({"state_dict": state, "global_step": 0, "epoch": 0}, path)
    return path


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Published-layout files for every stage, plus the two architecture YAMLs."""
    root = tmp_path_factory.mktemp("published")
    vqvae = _vqvae_state(0)
    files = {"codec": _write_openai_vqvae(root / "vqvae.pth.tar", vqvae)}
    torch.manual_seed(1)
    for name in ("level2", "level1", "level0"):
        files[name] = _write_v1_level(root / f"{name}.ckpt", LatentDenoiser(LEVEL), vqvae)
    files["dance"] = _write_dance(root / "dance.ckpt", DanceUNet(DANCE))
    (root / "level.yaml").write_text(yaml.safe_dump({"model": to_dict(LEVEL)}))
    (root / "dance.yaml").write_text(yaml.safe_dump({"model": to_dict(DANCE)}))
    files["other_codec"] = _write_openai_vqvae(root / "other.pth.tar", _vqvae_state(5))
    return files | {"level_config": root / "level.yaml", "dance_config": root / "dance.yaml"}


def _export(files: dict[str, Path], out: Path, codec: str = "codec") -> int:
    return main([
        "export", "--codec", str(files[codec]), "--level2", str(files["level2"]), "--level1", str(files["level1"]),
        "--level0", str(files["level0"]), "--dance", str(files["dance"]), "--out", str(out),
        "--level-config", str(files["level_config"]), "--dance-config", str(files["dance_config"]),
    ])  # fmt: skip


def test_published_files_become_a_bundle_that_continues(published: dict[str, Path], tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    assert _export(published, bundle) == 0
    manifest = yaml.safe_load((bundle / "bundle.yaml").read_text())
    assert manifest["stages"] == ["codec", "level2", "level1", "level0", "dance"]
    assert manifest["sampling"] == preset_section("v1")  # v1 checkpoints bring v1's recipe
    assert manifest["codec"]["fingerprint"] == manifest["level2"]["codec_fingerprint"]
    stored = load_file(str(bundle / "level1.safetensors"))
    source = torch.load(published["level1"], weights_only=True)["state_dict"]
    assert all(torch.equal(stored["net." + k], source["diffusion.net." + k]) for k in LatentDenoiser(LEVEL).net.state_dict())
    dance = load_file(str(bundle / "dance.safetensors"))
    dance_source = torch.load(published["dance"], weights_only=True)["state_dict"]
    assert all(torch.equal(v, dance_source["diffusion_ema." + k]) for k, v in dance.items())

    seed = tmp_path / "seed.wav"
    save_audio(seed, synth_music(1.0), 44100)
    out = tmp_path / "continued.wav"
    steps = "--steps=2=2,1=2,0=2,dance=2"
    assert main(["continue", str(seed), "--seconds", "0.5", "-o", str(out), "--model", str(bundle), steps, "--no-progress"]) == 0
    audio, rate = sf.read(out, always_2d=True)
    assert rate == 44100 and audio.shape == (22050, 2) and abs(audio).max() > 0


def test_levels_of_another_codec_are_refused(published: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _export(published, tmp_path / "bundle", codec="other_codec") == 2
    assert "was trained on latents of codec" in capsys.readouterr().err
    assert not (tmp_path / "bundle" / "bundle.yaml").exists()


def test_a_level_of_another_architecture_is_refused(published: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    wider = dataclasses.replace(LEVEL, unet=dataclasses.replace(LEVEL.unet, channels=(16, 32, 32)))
    (tmp_path / "wider.yaml").write_text(yaml.safe_dump({"model": to_dict(wider)}))
    assert _export(published | {"level_config": tmp_path / "wider.yaml"}, tmp_path / "bundle") == 2
    assert "level2.ckpt" in capsys.readouterr().err
    assert not (tmp_path / "bundle").exists() or not any((tmp_path / "bundle").iterdir())
