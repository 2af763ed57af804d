"""Training the Dance-Diffusion stage, exporting and loading it, and refining mono into stereo."""

from __future__ import annotations

import io
import shutil
import wave
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from jbdiff.core.audio import save_audio
from jbdiff.core.audio_dataset import fixed_crops, scan_audio_folder
from jbdiff.core.config import to_dict
from jbdiff.core.errors import JbdiffError
from jbdiff.core.stage_io import file_sha256
from jbdiff.core.synth import synth_music
from jbdiff.core.training import read_validation
from jbdiff.train import train_dance
from tests.conftest import ROOT, cpu_fit
from upsampler.dance_refiner import load_dance, padded_length, refine_stereo
from upsampler.dance_training import (
    DanceTrainingModule,
    crash_sigma,
    crop_length,
    load_dance_config,
)
from upsampler.dance_unet import DanceConfig, DanceUNet, load_dance_checkpoint

# Smaller than configs/dance/tiny.yaml: 5 levels, attention (one 32-channel head) on levels 3-5.
FAST_MODEL = {"io_channels": 2, "depth": 5, "n_attn_layers": 1, "channels": [16, 32, 32, 32, 32]}
FAST = DanceConfig(**FAST_MODEL)  # length multiple 16, min length 48


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def stereo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two stereo clips: synthesised music left, the same delayed by 10 ms (a phase shift) right."""
    folder = tmp_path_factory.mktemp("stereo")
    for i in range(2):
        left = synth_music(1.0, seed=i)
        save_audio(folder / f"clip{i}.wav", np.concatenate([left, np.roll(left, 441, axis=-1)]))
    return folder


@pytest.fixture(scope="module")
def fast_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cfg = {
        "model": FAST_MODEL,
        "train": {"batch_size": 2, "lr": 1e-3, "sample_seconds": 0.003, "checkpoint_every": 2, "log_every": 1},
        "ema_decay": 0.9,
        "demo_every": 2,
        "demo_steps": 4,
        "init_strength": 0.5,
    }
    path = tmp_path_factory.mktemp("cfg") / "dance.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _train(data: Path, config: Path, run: Path, steps: int) -> Path:
    return train_dance(data, config, run, options=cpu_fit(steps))


def _step(run: Path) -> int:
    return int(torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["global_step"])


def _random_net(seed: int = 0) -> DanceUNet:
    torch.manual_seed(seed)
    return DanceUNet(FAST).eval()


def _outputs(net: DanceUNet) -> torch.Tensor:
    x = torch.randn(2, 2, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        return net(x, torch.tensor([0.3, 0.8]))


def test_shipped_configs_and_crop_lengths() -> None:
    full = load_dance_config(ROOT / "configs" / "dance" / "full.yaml")
    assert full.model == DanceConfig()
    assert crop_length(full.train.sample_seconds, full.model) == 65536
    tiny = load_dance_config(ROOT / "configs" / "dance" / "tiny.yaml")
    assert crop_length(tiny.train.sample_seconds, tiny.model) == 33152  # 0.75 s rounded up to 128s
    assert crop_length(0.0001, FAST) == FAST.min_length
    sigma = crash_sigma(torch.linspace(0, 1, 5))
    assert torch.allclose(sigma[[0, 2, 4]], torch.tensor([0.0, 1 / 3, 1.0]), atol=1e-6)


def test_train_exports_the_stage_and_resumes(stereo_dir: Path, fast_config: Path, tmp_path: Path) -> None:
    run = _train(stereo_dir, fast_config, tmp_path / "run", 3)
    assert _step(run) == 3
    section = yaml.safe_load((run / "dance.yaml").read_text())
    assert section == {"model": to_dict(FAST), "sample_rate": 44100, "steps": 3}
    first = load_dance(run)

    events = EventAccumulator(str(run / "tb")).Reload()
    assert "demo/spectrogram" in events.Tags()["images"]
    demo = events.Audio("demo/stereo")[0]
    with wave.open(io.BytesIO(demo.encoded_audio_string)) as clip:
        assert (clip.getnchannels(), clip.getnframes()) == (2, crop_length(0.003, FAST))

    _train(stereo_dir, fast_config, run, 5)
    assert _step(run) == 5
    assert yaml.safe_load((run / "dance.yaml").read_text())["steps"] == 5
    assert not torch.equal(_outputs(first), _outputs(load_dance(run)))


def test_load_dance_round_trip(stereo_dir: Path, fast_config: Path, tmp_path: Path) -> None:
    run = _train(stereo_dir, fast_config, tmp_path / "run", 2)
    loaded = load_dance(run)
    # The exported weights are the EMA net of the checkpoint, which also loads in Harmonai's layout.
    ema = load_dance_checkpoint(run / "checkpoints" / "last.ckpt", FAST)
    assert torch.equal(_outputs(loaded), _outputs(ema))
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    shutil.copy(run / "dance.safetensors", bundle)
    section = {**yaml.safe_load((run / "dance.yaml").read_text()), "sha256": file_sha256(bundle / "dance.safetensors")}
    (bundle / "bundle.yaml").write_text(yaml.safe_dump({"dance": section}))
    assert torch.equal(_outputs(load_dance(bundle)), _outputs(loaded))
    with pytest.raises(JbdiffError, match="not found"):
        load_dance(tmp_path / "missing")


def test_refine_stereo_shape_and_seeds() -> None:
    net = _random_net()
    mono = torch.from_numpy(synth_music(0.002))[None].expand(2, -1, -1)  # (2, 1, 88)
    out = refine_stereo(net, mono, steps=4, init_strength=0.5, generator=torch.Generator().manual_seed(7))
    assert out.shape == (2, 2, mono.shape[-1])
    same = refine_stereo(net, mono, steps=4, init_strength=0.5, generator=torch.Generator().manual_seed(7))
    other = refine_stereo(net, mono, steps=4, init_strength=0.5, generator=torch.Generator().manual_seed(8))
    assert torch.equal(out, same)
    assert not torch.allclose(out, other)
    stereo = refine_stereo(net, mono.expand(-1, 2, -1), steps=4, init_strength=0.5, generator=torch.Generator().manual_seed(7))
    assert torch.equal(stereo, out)
    with pytest.raises(ValueError, match="1 or 2"):
        refine_stereo(net, torch.zeros(1, 3, 64), steps=4, init_strength=0.5, generator=torch.Generator())


def test_refine_stereo_at_full_init_strength_returns_the_input() -> None:
    mono = torch.from_numpy(synth_music(0.002))[None]
    out = refine_stereo(_random_net(), mono, steps=10, init_strength=1.0, generator=torch.Generator().manual_seed(0))
    assert torch.equal(out, mono.expand(-1, 2, -1))


@pytest.mark.parametrize("length", [20, 100])  # below the min length (48); not a multiple of 16
def test_refine_stereo_pads_and_trims(length: int) -> None:
    net = _random_net()
    audio = torch.randn(1, 2, length, generator=torch.Generator().manual_seed(3)) * 0.3
    padded = F.pad(audio, (0, padded_length(FAST, length) - length))
    assert padded.shape[-1] == (48 if length < 48 else 112)
    out = refine_stereo(net, audio, steps=3, init_strength=0.4, generator=torch.Generator().manual_seed(5))
    reference = refine_stereo(net, padded, steps=3, init_strength=0.4, generator=torch.Generator().manual_seed(5))
    assert out.shape == (1, 2, length)
    assert torch.equal(out, reference[:, :, :length])


def test_divergence_stops_and_keeps_last_good_checkpoint(stereo_dir: Path, fast_config: Path, tmp_path: Path) -> None:
    run = _train(stereo_dir, fast_config, tmp_path / "run", 2)
    path = run / "checkpoints" / "last.ckpt"
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    ckpt["state_dict"]["diffusion.net.6.main.3.weight"].fill_(float("nan"))
    torch.save(ckpt, path)
    before = path.read_bytes()
    with pytest.raises(JbdiffError, match="diverged at step 2"):
        _train(stereo_dir, fast_config, run, 6)
    assert path.read_bytes() == before


def test_training_validates_on_held_out_crops_and_export_picks_the_best(
    stereo_dir: Path, fast_config: Path, tmp_path: Path
) -> None:
    config = yaml.safe_load(fast_config.read_text())
    config["validation"] = {"every": 2, "windows": 3, "bins": 4}
    config_path = tmp_path / "dance.yaml"
    config_path.write_text(yaml.safe_dump(config))
    held_out = tmp_path / "held_out"
    held_out.mkdir()
    save_audio(held_out / "other.wav", np.stack([synth_music(0.5, seed=7)[0]] * 2))

    run = train_dance(stereo_dir, config_path, tmp_path / "run", val_data_dir=held_out, options=cpu_fit(4))
    rows = read_validation(run)
    assert [row["step"] for row in rows] == [2, 4]
    assert all(len(row["bins"]) == 4 and row["loss"] > 0 for row in rows)
    # the best weights re-scored on the same crops give the logged loss
    best = min(rows, key=lambda row: row["loss"])
    module = DanceTrainingModule(load_dance_config(config_path))
    module.diffusion_ema = load_dance(run / "best")
    length = crop_length(config["train"]["sample_seconds"], FAST)
    crops = fixed_crops(scan_audio_folder(held_out), length, 3, channels=2)
    assert module.validate(crops)["loss"] == pytest.approx(best["loss"], rel=1e-5)
    assert "val/loss" in EventAccumulator(str(run / "tb")).Reload().Tags()["scalars"]


def test_fixed_crops_are_evenly_spaced_and_repeatable(tmp_path: Path) -> None:
    ramp = np.linspace(-1, 1, 44100, dtype=np.float32)[None]  # a crop's first sample tells where it starts
    save_audio(tmp_path / "a.wav", ramp)
    save_audio(tmp_path / "b.wav", -ramp)
    folder = scan_audio_folder(tmp_path)
    crops = fixed_crops(folder, 4410, 4)
    assert crops.shape == (4, 1, 4410) and torch.equal(crops, fixed_crops(folder, 4410, 4))
    span = 44100 - 4410  # each file offers this many starts; 4 crops over 2 spans: at 1/8, 3/8, 5/8, 7/8
    starts = [-1 + 2 * (0.25 * span) / 44099, -1 + 2 * (0.75 * span) / 44099]
    expected = [starts[0], starts[1], -starts[0], -starts[1]]
    assert crops[:, 0, 0].tolist() == pytest.approx(expected, abs=2e-4)
    short = fixed_crops(folder, 2 * 44100, 3)  # longer than every file: files take turns, zero-padded
    assert short[:, 0, 0].tolist() == pytest.approx([-1, 1, -1], abs=1e-4) and float(short[0, 0, -1]) == 0
