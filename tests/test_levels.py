"""Latent levels: windows from shards, the context-attended denoiser, level training, bundles."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from jbdiff.bundle import export_bundle
from jbdiff.core.audio import save_audio
from jbdiff.core.errors import JbdiffError
from jbdiff.core.synth import synth_music
from jbdiff.train import train_level
from levels.base_prior import generate_next_window
from levels.codec import Codec
from levels.codec_io import load_codec, save_codec
from levels.denoiser_training import load_level_config, lookup_latents
from levels.latent_dataset import PAD_CODE, LatentWindows
from levels.latent_denoiser import LatentDenoiser, load_denoiser
from levels.latent_shards import LatentShards, encode_folder
from tests.conftest import ROOT, cpu_fit
from upsampler.residual import upsample_window


@pytest.fixture(scope="module")
def encoded(tmp_path_factory: pytest.TempPathFactory, tiny_codec: Codec) -> tuple[Path, Path]:
    """(codec folder, latents folder) for two 3-second synthetic clips."""
    root = tmp_path_factory.mktemp("levels")
    codec_dir = save_codec(tiny_codec, root / "codec")
    data = root / "data"
    data.mkdir()
    for i in range(2):
        save_audio(data / f"clip{i}.wav", synth_music(3.0, seed=10 + i))
    encode_folder(data, load_codec(codec_dir), root / "latents", codec_source=str(codec_dir), progress=False)
    return codec_dir, root / "latents"


@pytest.fixture(scope="module")
def small_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cfg = yaml.safe_load((ROOT / "configs" / "level1" / "tiny.yaml").read_text())
    cfg["model"]["window"] = 32
    cfg["model"]["unet"].update(
        channels=[32, 32, 64, 64], items=[1, 1, 1, 1], attention_heads=2, attention_features=16,
        embedding_max_length=64, modulation_features=32,
    )
    cfg["train"].update(batch_size=2, checkpoint_every=2, log_every=1)
    cfg.update(demo_every=2, demo_steps=2)
    path = tmp_path_factory.mktemp("cfg") / "level.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_windows_pad_the_context_at_a_songs_start(encoded: tuple[Path, Path]) -> None:
    shards = LatentShards(encoded[1])
    data = LatentWindows(shards, 1, 32, 2, residual=True, seed=0)
    rng = np.random.default_rng(0)
    seen_padding = False
    for _ in range(40):
        item = data.item(rng)
        assert item["codes"].shape == (32,) and item["context"].shape == (64,) and item["start"].shape == (32,)
        padded = int((item["context"] == PAD_CODE).sum())
        seen_padding |= padded > 0
        assert torch.all(item["context"][padded:] >= 0)
    assert seen_padding
    assert "start" not in LatentWindows(shards, 2, 32, 2, residual=False).item(rng)
    with pytest.raises(JbdiffError, match="no file has 100000 frames"):
        LatentWindows(shards, 2, 100000, 2, residual=False)


def test_window_codes_follow_their_context(encoded: tuple[Path, Path]) -> None:
    shards = LatentShards(encoded[1])
    data = LatentWindows(shards, 0, 32, 1, residual=True, seed=3)
    rng = np.random.default_rng(1)
    full = {i: shards.crop(i, 0, 0, shards.entries[i].frames[0]) for i in range(len(shards))}
    for _ in range(10):
        item = data.item(rng)
        joined = torch.cat([item["context"], item["codes"]])
        valid = joined[joined >= 0]
        hits = [i for i, codes in full.items() if any(torch.equal(codes[s : s + len(valid)], valid) for s in range(len(codes) - len(valid) + 1))]
        assert hits


def test_codes_to_latents_zeroes_padding() -> None:
    codebook = torch.randn(10, 4)
    codes = torch.tensor([[PAD_CODE, 3, 7]])
    latents = lookup_latents(codebook, codes)
    assert latents.shape == (1, 4, 3)
    assert torch.equal(latents[0, :, 0], torch.zeros(4)) and torch.equal(latents[0, :, 2], codebook[7])


def test_denoiser_context_and_sampling(small_config: Path) -> None:
    torch.manual_seed(0)
    model = LatentDenoiser(load_level_config(small_config).model).eval()
    assert model.context_from(None) is None
    short = model.context_from(torch.ones(1, 64, 10))
    assert short is not None and short.shape == (1, 64, 64) and short[..., :54].abs().sum() == 0
    assert torch.equal(model.context_from(torch.arange(200.0).expand(1, 64, 200))[0, 0], torch.arange(136.0, 200.0))
    noise = torch.randn(1, 64, 32, generator=torch.Generator().manual_seed(1))
    a = generate_next_window(model, None, noise, steps=3)
    b = generate_next_window(model, None, noise, steps=3)
    c = generate_next_window(model, torch.randn(1, 64, 64), noise, steps=3, guidance=2.0)
    assert torch.equal(a, b) and not torch.allclose(a, c)
    start = torch.randn(1, 64, 32)
    assert torch.equal(upsample_window(model, start, None, steps=4, init_strength=1.0), start)
    with pytest.raises(ValueError, match="expected latents shaped"):
        model.loss(torch.randn(1, 64, 30))


def test_train_levels_export_resume_and_bundle(encoded: tuple[Path, Path], small_config: Path, tmp_path: Path) -> None:
    codec_dir, latents = encoded
    runs = {}
    for stage in ("level2", "level1", "level0"):
        runs[stage] = train_level(stage, latents, small_config, tmp_path / stage, options=cpu_fit(2))
        section = yaml.safe_load((runs[stage] / f"{stage}.yaml").read_text())
        assert section["residual"] == (stage != "level2") and section["steps"] == 2
        assert any((runs[stage] / "tb").iterdir())
    before = load_denoiser(runs["level1"], "level1")
    train_level("level1", latents, small_config, runs["level1"], options=cpu_fit(3))
    ckpt = torch.load(runs["level1"] / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == 3
    after = load_denoiser(runs["level1"], "level1")
    assert any(not torch.equal(x, y) for x, y in zip(before.state_dict().values(), after.state_dict().values()))
    ema = {k.removeprefix("ema."): v for k, v in ckpt["state_dict"].items() if k.startswith("ema.")}
    assert all(torch.equal(after.state_dict()[k], v) for k, v in ema.items())

    bundle = export_bundle({"codec": codec_dir, **runs}, tmp_path / "bundle", data_note="synthetic")
    manifest = yaml.safe_load((bundle / "bundle.yaml").read_text())
    assert manifest["stages"] == ["codec", "level2", "level1", "level0"] and manifest["hops"] == [8, 32, 128]
    assert load_codec(bundle).fingerprint() == load_codec(codec_dir).fingerprint()
    level0 = load_denoiser(runs["level0"], "level0").state_dict()
    assert all(torch.equal(v, level0[k]) for k, v in load_denoiser(bundle, "level0").state_dict().items())
    with pytest.raises(JbdiffError, match="already exists"):
        export_bundle({"codec": codec_dir}, bundle)

    half = export_bundle({"codec": codec_dir, "level0": runs["level0"]}, tmp_path / "half", half=True)
    assert (half / "level0.safetensors").stat().st_size < 0.6 * (bundle / "level0.safetensors").stat().st_size
    assert (half / "codec.safetensors").read_bytes() == (bundle / "codec.safetensors").read_bytes()
    assert all(torch.allclose(v, level0[k], rtol=1e-3, atol=1e-4) for k, v in load_denoiser(half, "level0").state_dict().items())


def test_bundle_refuses_levels_of_another_codec(encoded: tuple[Path, Path], small_config: Path, tmp_path: Path, tiny_codec: Codec) -> None:
    codec_dir, latents = encoded
    run = train_level("level2", latents, small_config, tmp_path / "l2", options=cpu_fit(1))
    other = load_codec(codec_dir)
    with torch.no_grad():
        other.vqvae.decoders[0].out.bias.add_(1.0)
    other_dir = save_codec(other, tmp_path / "other_codec")
    with pytest.raises(JbdiffError, match="trained on latents of codec"):
        export_bundle({"codec": other_dir, "level2": run}, tmp_path / "bundle")
    with pytest.raises(JbdiffError, match="encoded with codec"):
        train_level("level2", latents, small_config, tmp_path / "l2b", codec_path=other_dir, options=cpu_fit(1))


def test_level_divergence_keeps_the_last_good_checkpoint(encoded: tuple[Path, Path], small_config: Path, tmp_path: Path) -> None:
    run = train_level("level2", encoded[1], small_config, tmp_path / "run", options=cpu_fit(2))
    path = run / "checkpoints" / "last.ckpt"
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    first = next(k for k in ckpt["state_dict"] if k.startswith("denoiser.") and k.endswith("weight"))
    ckpt["state_dict"][first].fill_(float("nan"))
    torch.save(ckpt, path)
    before = path.read_bytes()
    with pytest.raises(JbdiffError, match="diverged at step 2"):
        train_level("level2", encoded[1], small_config, run, options=cpu_fit(4))
    assert path.read_bytes() == before


def test_level_ddp_two_cpu_processes(encoded: tuple[Path, Path], small_config: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, "-m", "jbdiff.cli", "train", "level1", "--latents", str(encoded[1]), "--config", str(small_config),
         "--out", str(run), "--max-steps", "2", "--accelerator", "cpu", "--devices", "2", "--strategy", "ddp", "--no-progress"],
        capture_output=True, text=True, check=False, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["global_step"] == 2
    load_denoiser(run, "level1")


def test_ema_moves_once_per_optimizer_step_under_accumulation(encoded: tuple[Path, Path], small_config: Path, tmp_path: Path) -> None:
    cfg = yaml.safe_load(small_config.read_text())
    cfg["train"].update(accumulate_grad_batches=2, checkpoint_every=1)
    cfg.update(ema_decay=0.5, demo_every=0)
    config = tmp_path / "accumulate.yaml"
    config.write_text(yaml.safe_dump(cfg))

    def weights(step: int) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        train_level("level1", encoded[1], config, tmp_path / "run", options=cpu_fit(step))
        ckpt = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
        assert ckpt["global_step"] == step
        state = ckpt["state_dict"]
        live = {k.removeprefix("denoiser."): v for k, v in state.items() if k.startswith("denoiser.")}
        return live, {k.removeprefix("ema."): v for k, v in state.items() if k.startswith("ema.")}

    _, ema1 = weights(1)
    live2, ema2 = weights(2)
    moved = [k for k in ema2 if not torch.equal(ema2[k], ema1[k])]
    assert moved
    for key in moved:
        torch.testing.assert_close(ema2[key], torch.lerp(ema1[key], live2[key], 0.5))
