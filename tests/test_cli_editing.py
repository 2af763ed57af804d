"""The editing commands: inpaint, extend, loop and morph, their outputs and errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from jbdiff.cli import main
from jbdiff.core.audio import audio_info, load_audio, save_audio
from jbdiff.core.synth import synth_music

FAST = ["--init-strength", "1=0.34,0=0.5,dance=0.5", "--window-multiplier", "1", "--crossfade-samples", "512",
        "--no-progress", "--device", "cpu"]
STEPS = "2=3,1=3,0=2,dance=2"


@pytest.fixture(scope="module")
def song(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("song") / "song.wav"
    save_audio(path, np.concatenate([synth_music(1.5, seed=1), synth_music(1.5, seed=2)]), 44100)
    return path


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_inpaint_extend_loop_and_morph_write_audio_png_and_manifest(
    tiny_bundle: Path, song: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = ["--model", str(tiny_bundle), *FAST]
    runs = {
        "inpaint": (["inpaint", str(song), "--start", "0.5", "--end", "0.9", "--fade", "0.03", "--steps", STEPS], 66150),
        "extend": (["extend", str(song), "--before", "0.4", "--steps", STEPS], 66150 + 17640),
        "loop": (["loop", str(song), "--seconds", "1.2", "--steps", STEPS, "--seed", "3"], 52920),
        "morph": (["morph", str(song), str(song), "--steps", "2", "--sampling-steps", STEPS], 2 * 128 * 128),
    }
    source = load_audio(song, channels=None)
    for command, (argv, frames) in runs.items():
        out = tmp_path / f"{command}.wav"
        code, stdout, err = _run([*argv, "-o", str(out), *model], capsys)
        assert code == 0 and f"wrote {out}" in stdout, (command, err)
        assert audio_info(out).frames == frames and out.with_suffix(".png").is_file(), command
        assert json.loads(out.with_suffix(".json").read_text())["command"] == command
    edited = load_audio(tmp_path / "inpaint.wav", channels=None)
    assert np.abs(edited[:, :22050] - source[:, :22050]).max() < 1e-6  # before the region (its fades lie inside it)
    assert np.abs(edited[:, 39690:] - source[:, 39690:]).max() < 1e-6  # after it
    manifest = json.loads((tmp_path / "loop.json").read_text())
    assert manifest["settings"]["seed"] == 3 and "wrap_region" in manifest


def test_edit_errors_are_one_sentence_and_leave_no_file(tiny_bundle: Path, song: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    short = tmp_path / "short.wav"
    save_audio(short, synth_music(0.1), 44100)
    out = str(tmp_path / "o.wav")
    model = ["--model", str(tiny_bundle), *FAST]
    cases = {
        "past the end": ["inpaint", str(song), "--start", "1.0", "--end", "2.0"],
        "before the start": ["inpaint", str(song), "--start", "-1", "--end", "0.5"],
        "end before start": ["inpaint", str(song), "--start", "0.8", "--end", "0.5"],
        "shorter than a frame": ["inpaint", str(song), "--start", "0.5", "--end", "0.501"],
        "fade too long": ["inpaint", str(song), "--start", "0.5", "--end", "0.6", "--fade", "0.5"],
        "short loop input": ["loop", str(short), "--seconds", "2"],
        "short morph input": ["morph", str(song), str(short), "--steps", "3"],
        "no clips": ["morph", str(song), str(song), "--steps", "0"],
        "zero extension": ["extend", str(song), "--before", "0"],
        "negative jumps": ["inpaint", str(song), "--start", "0.5", "--end", "0.9", "--jumps", "-1"],
    }
    for name, argv in cases.items():
        code, _, err = _run([*argv, "-o", out, *model], capsys)
        assert code == 2, name
        assert err.startswith("jbdiff: error: ") and err.count("\n") == 1 and "Traceback" not in err, (name, err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["short.wav"]


def test_eval_inpaint_scores_regions_seams_and_a_loop(tiny_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "music"
    data.mkdir()
    save_audio(data / "song.wav", synth_music(5.0, seed=4))
    out = tmp_path / "inpaint.json"
    code, stdout, err = _run(["eval", "inpaint", "--data", str(data), "--model", str(tiny_bundle), "--regions", "0.3,0.6",
                              "--context-seconds", "1", "--loop-seconds", "1", "--jumps", "1", "--device", "cpu", "--no-progress",
                              "--json", str(out)], capsys)
    assert code == 0 and "| 0.3s inpainted" in stdout, err
    report = json.loads(out.read_text())
    summary = report["summary"]
    assert report["options"]["jumps"] == 1
    assert set(summary) == {f"{r}s {c}" for r in ("0.3", "0.6") for c in ("inpainted", "naive", "real", "pink_noise", "codec")} | {"loop", "loop naive"}
    assert {"fd_real", "tag_kl_real", "seam_start", "seam_end"} <= set(summary["0.3s inpainted"])
    assert summary["0.6s real"]["fd_real"] == pytest.approx(0.0, abs=1e-6) and "seam_wrap" in summary["loop"]
    assert (tmp_path / "inpaint_seam_wrap.png").is_file()
