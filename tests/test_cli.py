"""The command line: help, reconstruct, encode, eval codec, and one-sentence errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from jbdiff.cli import main
from jbdiff.core.audio import audio_info, load_audio, save_audio
from jbdiff.core.synth import synth_music
from jbdiff.metrics.codec import si_sdr
from levels.codec import Codec
from levels.codec_io import save_codec


@pytest.fixture(scope="module")
def codec_dir(tmp_path_factory: pytest.TempPathFactory, tiny_codec: Codec) -> Path:
    return save_codec(tiny_codec, tmp_path_factory.mktemp("codec"))


@pytest.fixture(scope="module")
def song(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("in") / "song.flac"
    save_audio(path, np.repeat(synth_music(1.3, sample_rate=48000), 2, axis=0), 48000)
    return path


@pytest.mark.parametrize(
    "argv",
    [[], ["train"], ["train", "codec"], ["train", "level2"], ["train", "level1"], ["train", "level0"],
     ["train", "dance"], ["encode"], ["export"], ["reconstruct"], ["eval"], ["eval", "codec"],
     ["continue"], ["remix"], ["generate"]],
)
def test_help_for_every_command(argv: list[str]) -> None:
    result = subprocess.run([sys.executable, "-m", "jbdiff.cli", *argv, "--help"], capture_output=True, text=True, check=False)
    assert result.returncode == 0
    assert "usage: jbdiff" in result.stdout


@pytest.mark.parametrize("level", [0, 1, 2])
def test_reconstruct_keeps_length_at_every_level(codec_dir: Path, song: Path, tmp_path: Path, tiny_codec: Codec, level: int) -> None:
    out = tmp_path / f"rec{level}.wav"
    assert main(["reconstruct", str(song), str(out), "--codec", str(codec_dir), "--level", str(level), "--device", "cpu"]) == 0
    info = audio_info(out)
    source = load_audio(song)
    assert (info.sample_rate, info.channels, info.frames) == (44100, 1, source.shape[-1])
    import torch

    codes = tiny_codec.encode_codes(torch.from_numpy(source)[None], [level])[level]
    expected = tiny_codec.decode_codes(level, codes)[0, :, : source.shape[-1]].numpy()
    got = load_audio(out)
    assert si_sdr(torch.from_numpy(expected), torch.from_numpy(got)) > 60


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(argv)
    return code, capsys.readouterr().err


def test_errors_are_one_sentence(codec_dir: Path, song: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cases = {
        "missing input": ["reconstruct", str(tmp_path / "nope.wav"), str(tmp_path / "o.wav"), "--codec", str(codec_dir)],
        "missing codec": ["reconstruct", str(song), str(tmp_path / "o.wav"), "--codec", str(tmp_path / "nocodec")],
        "missing folder": ["reconstruct", str(song), str(tmp_path / "no" / "o.wav"), "--codec", str(codec_dir)],
        "bad device": ["reconstruct", str(song), str(tmp_path / "o.wav"), "--codec", str(codec_dir), "--device", "tpu"],
    }
    for name, argv in cases.items():
        code, err = _run(argv, capsys)
        assert code == 2, name
        assert err.startswith("jbdiff: error: ") and err.count("\n") == 1, (name, err)
        assert "Traceback" not in err
    assert not (tmp_path / "o.wav").exists()


def test_existing_output_needs_overwrite(codec_dir: Path, song: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "o.wav"
    out.write_bytes(b"keep me")
    code, err = _run(["reconstruct", str(song), str(out), "--codec", str(codec_dir)], capsys)
    assert code == 2 and "--overwrite" in err
    assert out.read_bytes() == b"keep me"
    assert main(["reconstruct", str(song), str(out), "--codec", str(codec_dir), "--overwrite"]) == 0
    assert audio_info(out).frames > 0


def test_too_short_input_is_refused(codec_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tiny = tmp_path / "tiny.wav"
    save_audio(tiny, np.zeros((1, 50), dtype=np.float32))
    code, err = _run(["reconstruct", str(tiny), str(tmp_path / "o.wav"), "--codec", str(codec_dir), "--level", "2"], capsys)
    assert code == 2 and "tiny.wav" in err and "at least" in err


def test_encode_and_eval_codec(codec_dir: Path, song: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = song.parent
    latents = tmp_path / "latents"
    assert main(["encode", str(data), "--codec", str(codec_dir), "--out", str(latents), "--no-progress"]) == 0
    manifest = json.loads((latents / "manifest.json").read_text())
    assert [e["source"] for e in manifest["entries"]] == ["song.flac"]
    assert main(["encode", str(data), "--codec", str(codec_dir), "--out", str(latents), "--no-progress"]) == 0
    assert "encoded 0 file(s), 1 unchanged" in capsys.readouterr().out
    report = tmp_path / "eval.json"
    assert main(["eval", "codec", "--codec", str(codec_dir), "--data", str(data), "--json", str(report), "--no-progress"]) == 0
    assert "SI-SDR" in capsys.readouterr().out
    assert json.loads(report.read_text())
    args = ["eval", "codec", "--codec", str(codec_dir), "--data", str(data), "--json", str(report), "--no-progress"]
    before = report.read_bytes()
    assert main(args) == 2 and "--overwrite" in capsys.readouterr().err and report.read_bytes() == before
    assert main([*args, "--overwrite"]) == 0
