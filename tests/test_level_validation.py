"""Held-out validation while training a latent level, noise-level sampling, the LR schedule, export --best."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from jbdiff.core.audio import save_audio
from jbdiff.core.config import TrainConfig
from jbdiff.core.diffusion import alpha_beta, bin_sigmas, v_loss
from jbdiff.core.errors import JbdiffError
from jbdiff.core.noise_levels import NoiseLevels
from jbdiff.core.synth import synth_music
from jbdiff.core.training import FitOptions, ValidationConfig, read_validation
from jbdiff.train import train_level
from levels.codec import Codec
from levels.codec_io import load_codec, save_codec
from levels.denoiser_training import load_level_config, lookup_latents
from levels.latent_dataset import PAD_CODE
from levels.latent_denoiser import LatentDenoiser, load_denoiser
from levels.latent_shards import LatentShards, encode_folder
from levels.level_validation import validate, validation_windows
from tests.conftest import ROOT, cpu_fit

WINDOW = 32


@pytest.fixture(scope="module")
def latents(tmp_path_factory: pytest.TempPathFactory, tiny_codec: Codec) -> dict[str, Path]:
    """A codec folder and level-2 latents of two training clips and one held-out clip."""
    root = tmp_path_factory.mktemp("validation")
    codec_dir = save_codec(tiny_codec, root / "codec")
    out = {"codec": codec_dir}
    for split, seeds in (("train", (1, 2)), ("val", (3,))):
        data = root / split
        data.mkdir()
        for seed in seeds:
            save_audio(data / f"clip{seed}.wav", synth_music(3.0, seed=seed))
        encode_folder(data, load_codec(codec_dir), root / f"{split}_latents", codec_source=str(codec_dir), progress=False, levels=[2])
        out[split] = root / f"{split}_latents"
    return out


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cfg = yaml.safe_load((ROOT / "configs" / "level2" / "demo.yaml").read_text())
    cfg["model"]["window"] = WINDOW
    cfg["model"]["unet"].update(
        channels=[32, 32, 64, 64, 64], items=[1, 1, 1, 1, 1], attention_heads=2, attention_features=16,
        embedding_max_length=2 * WINDOW, modulation_features=32,
    )
    cfg["train"].update(batch_size=2, checkpoint_every=2, log_every=1, warmup_steps=1, max_steps=6)
    cfg["validation"] = {"every": 2, "windows": 3, "bins": 4}
    path = tmp_path_factory.mktemp("cfg") / "level2.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_bins_are_centred() -> None:
    assert torch.allclose(bin_sigmas(5), torch.tensor([0.1, 0.3, 0.5, 0.7, 0.9]))


def test_validation_windows_are_fixed_crops_with_their_context(latents: dict[str, Path]) -> None:
    shards = LatentShards(latents["val"])
    batch = validation_windows(shards, 2, WINDOW, 2, residual=False, count=4)
    assert batch["codes"].shape == (4, WINDOW) and batch["context"].shape == (4, 2 * WINDOW)
    again = validation_windows(shards, 2, WINDOW, 2, residual=False, count=4)
    assert all(torch.equal(batch[k], again[k]) for k in batch)
    full = shards.crop(0, 2, 0, shards.entries[0].frames[2])
    for codes, context in zip(batch["codes"], batch["context"]):
        start = next(s for s in range(len(full) - WINDOW + 1) if torch.equal(full[s : s + WINDOW], codes))
        padded = int((context == PAD_CODE).sum())
        assert padded == max(0, 2 * WINDOW - start)
        assert torch.equal(context[padded:], full[max(0, start - 2 * WINDOW) : start])
    with pytest.raises(ValueError, match="no held-out file"):
        validation_windows(shards, 2, 10**6, 2, residual=False, count=1)


class _Known(torch.nn.Module):
    """A stand-in network that answers from the clean latents it is told: exact, or always zero."""

    def __init__(self, x: torch.Tensor, exact: bool) -> None:
        super().__init__()
        self.x, self.exact = x, exact

    def forward(self, noisy: torch.Tensor, sigma: torch.Tensor, **_: object) -> torch.Tensor:
        alpha, beta = alpha_beta(sigma[0])
        if self.exact:  # noise = (noisy - alpha x) / beta; v = alpha noise - beta x
            return alpha * (noisy - alpha * self.x) / beta - beta * self.x
        return alpha * noisy / beta  # predicted clean latents alpha noisy - beta v = 0


def test_validate_known_answers(config: Path) -> None:
    model = LatentDenoiser(load_level_config(config).model).eval()
    x = torch.randn(3, 64, WINDOW, generator=torch.Generator().manual_seed(0)) * 1.5
    context = torch.randn(3, 64, 2 * WINDOW)
    cfg = ValidationConfig(bins=4)
    real = validate(model, x, context, None, cfg)
    assert real == validate(model, x, context, None, cfg)  # fixed noise: repeatable
    for row in real["bins"]:  # the clean-latent error is the velocity error scaled by beta
        beta = math.sin(row["sigma"] * math.pi / 2)
        assert row["x_rmse"] == pytest.approx(beta * math.sqrt(row["v_mse"]), rel=1e-4)
        assert row["zero_rmse"] == pytest.approx(float(x.pow(2).mean().sqrt()), rel=1e-5)
    model.net = _Known(x, exact=True)
    exact = validate(model, x, context, None, cfg)
    assert exact["loss"] < 1e-8 and all(row["x_rmse"] < 1e-4 for row in exact["bins"])
    model.net = _Known(x, exact=False)
    zero = validate(model, x, context, None, cfg)
    assert all(row["x_rmse"] == pytest.approx(row["zero_rmse"], rel=1e-4) for row in zero["bins"])


def test_training_validates_keeps_the_best_and_export_picks_it(latents: dict[str, Path], config: Path, tmp_path: Path) -> None:
    run = train_level("level2", latents["train"], config, tmp_path / "run", val_latents_dir=latents["val"], options=cpu_fit(4))
    rows = read_validation(run)
    assert [row["step"] for row in rows] == [2, 4]
    assert all(len(row["bins"]) == 4 and row["loss"] > 0 for row in rows)
    best = min(rows, key=lambda row: row["loss"])
    # the best weights are the EMA weights that scored the lowest loss: re-scoring them agrees
    module_cfg = load_level_config(config)
    codec = load_codec(latents["codec"])
    codebook = codec.latent_codebook(2)
    batch = validation_windows(LatentShards(latents["val"]), 2, WINDOW, 2, residual=False, count=3)
    rescored = validate(
        load_denoiser(run / "best", "level2"),
        lookup_latents(codebook, batch["codes"]),
        lookup_latents(codebook, batch["context"]),
        None,
        module_cfg.validation,
    )
    assert rescored["loss"] == pytest.approx(best["loss"], rel=1e-5)
    scalars = EventAccumulator(str(run / "tb")).Reload().Tags()["scalars"]
    assert "val/loss" in scalars and "val/x_rmse/sigma_0.12" in scalars and "lr" in scalars

    train_level("level2", latents["train"], config, run, val_latents_dir=latents["val"], options=cpu_fit(6))
    assert [row["step"] for row in read_validation(run)] == [2, 4, 6]  # resumed: appended, not restarted

    bundle = tmp_path / "bundle"
    subprocess.run(
        [sys.executable, "-m", "jbdiff.cli", "export", "--codec", str(latents["codec"]), "--level2", str(run),
         "--best", "--out", str(bundle)],
        check=True, capture_output=True, text=True,
    )
    exported = load_denoiser(bundle, "level2").state_dict()
    chosen = load_denoiser(run / "best", "level2").state_dict()
    assert all(torch.equal(v, chosen[k]) for k, v in exported.items())


def test_level_training_refuses_latents_without_its_level(latents: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(JbdiffError, match="encode with --levels 1,2"):
        train_level("level1", latents["train"], ROOT / "configs" / "level1" / "tiny.yaml", tmp_path / "l1", options=cpu_fit(1))


def test_noise_level_distributions() -> None:
    generator = torch.Generator().manual_seed(0)
    uniform = NoiseLevels().draw(20000, generator=generator)
    shifted = NoiseLevels("logit-normal", mean=0.5, std=1.0).draw(20000, generator=generator)
    assert 0 <= float(uniform.min()) and float(uniform.max()) <= 1 and float(uniform.mean()) == pytest.approx(0.5, abs=0.01)
    assert float(shifted.median()) == pytest.approx(1 / (1 + math.exp(-0.5)), abs=0.01)
    assert float((shifted > 0.5).float().mean()) == pytest.approx(0.69, abs=0.01)  # P(z > -0.5)
    with pytest.raises(ValueError, match="unknown noise-level distribution"):
        NoiseLevels("cosine")


def test_x0_weighting_makes_the_loss_the_clean_latent_error() -> None:
    generator = torch.Generator().manual_seed(3)
    x = torch.randn(6, 4, 32, generator=generator)
    noise = torch.randn(6, 4, 32, generator=generator)
    sigma = torch.linspace(0.05, 0.95, 6)
    guess = torch.randn(6, 4, 32, generator=generator)

    def net(noisy: torch.Tensor, s: torch.Tensor) -> torch.Tensor:  # an imperfect velocity predictor
        return guess

    levels = NoiseLevels("uniform", weighting="x0")
    assert NoiseLevels().weight(sigma) is None
    weighted = v_loss(net, x, start=noise, sigma=sigma, weight=levels.weight(sigma))
    alpha, beta = (t.view(-1, 1, 1) for t in alpha_beta(sigma))
    x_hat = alpha * (alpha * x + beta * noise) - beta * guess
    assert float(weighted) == pytest.approx(float((x_hat - x).pow(2).mean()), rel=1e-5)
    assert float(v_loss(net, x, start=noise, sigma=sigma)) == pytest.approx(float((guess - (alpha * noise - beta * x)).pow(2).mean()), rel=1e-5)
    with pytest.raises(ValueError, match="unknown loss weighting"):
        NoiseLevels(weighting="snr")


def test_lr_warmup_then_cosine() -> None:
    train = TrainConfig(lr_schedule="cosine", warmup_steps=10, lr_final=0.1, max_steps=110)
    assert [train.lr_factor(s) for s in (0, 4, 9)] == pytest.approx([0.1, 0.5, 1.0])
    assert train.lr_factor(60) == pytest.approx(0.55)
    assert train.lr_factor(110) == pytest.approx(0.1) and train.lr_factor(500) == pytest.approx(0.1)
    assert TrainConfig().lr_factor(10**6) == 1.0
    with pytest.raises(ValueError, match="unknown lr_schedule"):
        TrainConfig(lr_schedule="step")


def test_ema_warmup_follows_the_live_weights_early(latents: dict[str, Path], config: Path, tmp_path: Path) -> None:
    cfg = yaml.safe_load(config.read_text())
    cfg.update(ema_decay=0.999, ema_warmup=True)
    path = tmp_path / "warm.yaml"
    path.write_text(yaml.safe_dump(cfg))
    run = train_level("level2", latents["train"], path, tmp_path / "run", options=cpu_fit(1))
    state = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)["state_dict"]
    live = {k.removeprefix("denoiser."): v for k, v in state.items() if k.startswith("denoiser.")}
    ema = {k.removeprefix("ema."): v for k, v in state.items() if k.startswith("ema.")}
    torch.manual_seed(cfg["train"].get("seed", 0))  # what train_level seeds before building the model
    initial = LatentDenoiser(load_level_config(path).model).state_dict()
    # the first update's decay is 1/10, not 0.999: the EMA moved 90 % of the way to the live weights
    moved = [k for k in ema if not torch.equal(initial[k], live[k])]
    assert moved
    for key in moved:
        torch.testing.assert_close(ema[key], torch.lerp(initial[key], live[key], 0.9))


def test_bf16_mixed_training_with_gradient_clipping_stops_at_the_time_limit(latents: dict[str, Path], config: Path, tmp_path: Path) -> None:
    # mixed precision with grad_clip used to fail at the first step: Lightning refuses to clip
    # for the fused AdamW; --max-minutes stops long before the 10**6 steps, exporting as usual
    options = FitOptions(max_steps=10**6, max_minutes=0.01, accelerator="cpu", devices=1, precision="bf16-mixed", progress=False)
    assert load_level_config(config).train.grad_clip > 0
    run = train_level("level2", latents["train"], config, tmp_path / "run", options=options)
    step = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)["global_step"]
    assert 1 <= step < 10**6
    weights = load_denoiser(run, "level2")
    assert all(torch.isfinite(p).all() for p in weights.parameters())
    # the time limit counts across resumes, as max_steps does: the same command trains no further
    train_level("level2", latents["train"], config, run, options=options)
    assert torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)["global_step"] == step
