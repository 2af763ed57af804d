"""The sampling commands: continue, remix and generate, their options, outputs and errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from jbdiff.cli import main
from jbdiff.core.audio import audio_info, save_audio
from jbdiff.core.synth import synth_music

FAST = ["--steps", "2=3,1=3,0=2,dance=2", "--init-strength", "1=0.34,0=0.5,dance=0.5", "--window-multiplier", "1",
        "--crossfade-samples", "512", "--no-progress", "--device", "cpu"]


@pytest.fixture(scope="module")
def seed_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("seed") / "seed.ogg"
    save_audio(path, np.repeat(synth_music(1.0, sample_rate=48000), 2, axis=0), 48000)
    return path


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_continue_writes_audio_png_and_manifest(tiny_bundle: Path, seed_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cont.wav"
    code, stdout, _ = _run(["continue", str(seed_file), "--seconds", "0.5", "-o", str(out), "--model", str(tiny_bundle),
                            "--include-seed", "--guidance", "2=3", "--sampler", "v", "--seed", "7", *FAST], capsys)
    assert code == 0 and f"wrote {out}" in stdout
    info = audio_info(out)
    assert info.channels == 2 and info.sample_rate == 44100
    assert info.frames == 44100 + 22050  # the whole seed (resampled) + the continuation
    assert out.with_suffix(".png").is_file()
    manifest = json.loads(out.with_suffix(".json").read_text())
    settings = manifest["settings"]
    assert settings["seed"] == 7 and settings["level2"] == {"steps": 3, "guidance": 3.0, "init_strength": 0.0, "sampler": "v"}
    assert settings["dance"]["init_strength"] == 0.5 and settings["window_multiplier"] == 1
    assert manifest["include_seed"] is True and manifest["seams"][0] == 44100


def test_generate_and_remix_with_level_subsets(tiny_bundle: Path, seed_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    gen = tmp_path / "gen.flac"
    assert _run(["generate", "--seconds", "0.4", "-o", str(gen), "--model", str(tiny_bundle), "--levels", "2,1", "--batch", "2", *FAST], capsys)[0] == 0
    takes = [tmp_path / "gen_take1.flac", tmp_path / "gen_take2.flac"]
    assert all(audio_info(p).channels == 1 and audio_info(p).frames == 17640 for p in takes)
    rmx = tmp_path / "rmx.wav"
    code = _run(["remix", str(seed_file), "--strength", "0.3", "-o", str(rmx), "--model", str(tiny_bundle),
                 "--context", str(seed_file), *FAST], capsys)[0]
    assert code == 0 and audio_info(rmx).frames == 44100 and audio_info(rmx).channels == 2


def test_errors_are_one_sentence_and_leave_no_file(tiny_bundle: Path, seed_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    short = tmp_path / "short.wav"
    save_audio(short, np.zeros((1, 60), dtype=np.float32))
    out = str(tmp_path / "o.wav")
    model = ["--model", str(tiny_bundle)]
    cases = {
        "missing bundle": ["continue", str(seed_file), "--seconds", "1", "-o", out, "--model", str(tmp_path / "none")],
        "not a bundle": ["continue", str(seed_file), "--seconds", "1", "-o", out, "--model", str(seed_file.parent)],
        "missing seed": ["continue", str(tmp_path / "nope.wav"), "--seconds", "1", "-o", out, *model],
        "short seed": ["continue", str(short), "--seconds", "1", "-o", out, *model],
        "zero seconds": ["continue", str(seed_file), "--seconds", "0", "-o", out, *model],
        "negative seconds": ["generate", "--seconds", "-2", "-o", out, *model],
        "strength": ["remix", str(seed_file), "--strength", "1.5", "-o", out, *model],
        "level": ["generate", "--seconds", "1", "-o", out, "--levels", "2,5", *model],
        "sampler": ["generate", "--seconds", "1", "-o", out, "--sampler", "euler", *model],
        "stage key": ["generate", "--seconds", "1", "-o", out, "--steps", "3=10", *model],
        "steps value": ["generate", "--seconds", "1", "-o", out, "--steps", "many", *model],
        "missing folder": ["generate", "--seconds", "1", "-o", str(tmp_path / "no" / "o.wav"), *model],
        "format": ["generate", "--seconds", "1", "-o", str(tmp_path / "o.mp4"), *model],
    }
    for name, argv in cases.items():
        code, _, err = _run(argv, capsys)
        assert code == 2, name
        assert err.startswith("jbdiff: error: ") and err.count("\n") == 1 and "Traceback" not in err, (name, err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["short.wav"]


def test_an_existing_output_needs_overwrite(tiny_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "o.wav"
    out.write_bytes(b"keep me")
    code, _, err = _run(["generate", "--seconds", "0.2", "-o", str(out), "--model", str(tiny_bundle), *FAST], capsys)
    assert code == 2 and "--overwrite" in err and out.read_bytes() == b"keep me"
    assert _run(["generate", "--seconds", "0.2", "-o", str(out), "--model", str(tiny_bundle), "--overwrite", *FAST], capsys)[0] == 0
    assert audio_info(out).frames == 8820


def test_eval_continuation_and_remix_commands(tiny_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "music"
    data.mkdir()
    save_audio(data / "song.wav", synth_music(3.5, seed=4))
    common = ["--data", str(data), "--model", str(tiny_bundle), "--seconds", "1", "--device", "cpu", "--no-progress"]
    code, stdout, _ = _run(["eval", "continuation", *common, "--seed-seconds", "1", "--json", str(tmp_path / "cont.json")], capsys)
    assert code == 0 and "|" in stdout
    report = json.loads((tmp_path / "cont.json").read_text())
    assert {"generated", "pink_noise"} <= set(report["summary"])
    assert report["options"]["model"] == str(tiny_bundle) and report["options"]["sampling"]["level2"]["steps"] == 3
    code, _, _ = _run(["eval", "continuation", *common, "--seed-seconds", "1", "--levels", "2", "--steps", "2=1",
                       "--json", str(tmp_path / "level2.json")], capsys)
    sampling = json.loads((tmp_path / "level2.json").read_text())["options"]["sampling"]
    assert code == 0 and sampling["levels"] == ["level2"] and sampling["level2"]["steps"] == 1
    assert (tmp_path / "cont.md").is_file() and list(tmp_path.glob("cont_*.png"))
    before = (tmp_path / "cont.json").read_bytes()  # a finished report is not replaced without --overwrite
    code, _, err = _run(["eval", "continuation", *common, "--json", str(tmp_path / "cont.json")], capsys)
    assert code == 2 and "--overwrite" in err and (tmp_path / "cont.json").read_bytes() == before
    code, stdout, _ = _run(["eval", "remix", *common, "--strengths", "0,1"], capsys)
    assert code == 0 and "|" in stdout
    code, _, err = _run(["eval", "remix", *common, "--strengths", "half"], capsys)
    assert code == 2 and "--strengths" in err
