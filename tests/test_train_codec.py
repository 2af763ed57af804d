"""Training the codec end to end: run folder, resume, divergence, DDP, kill safety."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from jbdiff.core.audio import save_audio
from jbdiff.core.errors import JbdiffError
from jbdiff.core.synth import synth_music
from jbdiff.train import train_codec
from levels.codec_io import load_codec
from tests.conftest import TINY_CODEC_CONFIG, cpu_fit


@pytest.fixture(scope="module")
def music_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("music")
    for i in range(2):
        save_audio(folder / f"clip{i}.wav", synth_music(3.0, seed=i))
    (folder / "notes.txt").write_text("not audio")
    return folder


@pytest.fixture(scope="module")
def fast_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cfg = yaml.safe_load(TINY_CODEC_CONFIG.read_text())
    cfg["train"].update(batch_size=2, sample_seconds=0.2, checkpoint_every=2, log_every=1)
    path = tmp_path_factory.mktemp("cfg") / "codec.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _step(run: Path) -> int:
    return int(torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["global_step"])


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "jbdiff.cli", *args]


def test_train_writes_a_loadable_codec_and_resumes(music_dir: Path, fast_config: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    train_codec(music_dir, fast_config, run, options=cpu_fit(3))
    assert _step(run) == 3
    assert (run / "config.yaml").is_file() and any((run / "tb").iterdir())
    first = load_codec(run)
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert len(ckpt["codebook_ema"]) == 3
    train_codec(music_dir, fast_config, run, options=cpu_fit(5))
    assert _step(run) == 5
    second = load_codec(run)
    assert first.fingerprint() != second.fingerprint()
    audio = torch.from_numpy(synth_music(1.0))[None]
    assert second.decode_codes(2, second.encode_codes(audio, [2])[2]).shape[-1] == second.padded_length(44100)


def test_resume_refuses_a_different_model(music_dir: Path, fast_config: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    train_codec(music_dir, fast_config, run, options=cpu_fit(2))
    cfg = yaml.safe_load(fast_config.read_text())
    cfg["model"]["width"] = 8
    other = tmp_path / "other.yaml"
    other.write_text(yaml.safe_dump(cfg))
    with pytest.raises(JbdiffError, match="different model config"):
        train_codec(music_dir, other, run, options=cpu_fit(4))


def test_divergence_stops_and_keeps_last_good_checkpoint(music_dir: Path, fast_config: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    train_codec(music_dir, fast_config, run, options=cpu_fit(2))
    path = run / "checkpoints" / "last.ckpt"
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    ckpt["state_dict"]["vqvae.decoders.0.out.weight"].fill_(float("nan"))
    torch.save(ckpt, path)
    before = path.read_bytes()
    with pytest.raises(JbdiffError, match="diverged at step 2"):
        train_codec(music_dir, fast_config, run, options=cpu_fit(6))
    assert path.read_bytes() == before


def test_empty_or_unreadable_folder_is_a_clear_error(fast_config: Path, tmp_path: Path) -> None:
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "broken.wav").write_text("not audio")
    with pytest.raises(JbdiffError, match=r"no readable audio files found \(1 unreadable"):
        train_codec(tmp_path / "bad", fast_config, tmp_path / "run", options=cpu_fit(1))
    result = subprocess.run(
        _cli("train", "codec", "--data", str(tmp_path / "missing"), "--config", str(fast_config), "--out", str(tmp_path / "r")),
        capture_output=True, text=True, check=False,
    )
    assert result.returncode == 2
    assert "missing" in result.stderr and "Traceback" not in result.stderr


def test_ddp_two_cpu_processes(music_dir: Path, fast_config: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    result = subprocess.run(
        _cli("train", "codec", "--data", str(music_dir), "--config", str(fast_config), "--out", str(run),
             "--max-steps", "2", "--accelerator", "cpu", "--devices", "2", "--strategy", "ddp", "--no-progress"),
        capture_output=True, text=True, check=False, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "training on 2 processes (DDPStrategy)" in result.stdout + result.stderr
    assert _step(run) == 2
    load_codec(run)


def test_kill_never_leaves_a_corrupt_checkpoint(music_dir: Path, fast_config: Path, tmp_path: Path) -> None:
    cfg = yaml.safe_load(fast_config.read_text())
    cfg["train"]["checkpoint_every"] = 1
    config = tmp_path / "every_step.yaml"
    config.write_text(yaml.safe_dump(cfg))
    run = tmp_path / "run"
    proc = subprocess.Popen(
        _cli("train", "codec", "--data", str(music_dir), "--config", str(config), "--out", str(run),
             "--max-steps", "1000", "--accelerator", "cpu", "--devices", "1", "--no-progress"),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 300
    while not (run / "checkpoints" / "last.ckpt").exists() and time.time() < deadline:
        time.sleep(0.2)
    time.sleep(1.5)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_at = _step(run)
    assert killed_at >= 1
    load_codec(run)
    train_codec(music_dir, config, run, options=cpu_fit(killed_at + 1))
    assert _step(run) == killed_at + 1
    assert [p.name for p in run.rglob("*") if ".part" in p.name] == []
