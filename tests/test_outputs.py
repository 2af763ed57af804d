"""What a run writes: every output checked up front and claimed while it runs, the user's umask,
SIGTERM cleanup; and numbers and sizes refused in one sentence before any work."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from jbdiff.cli import main
from jbdiff.core.audio import save_audio
from jbdiff.core.errors import JbdiffError
from jbdiff.core.stage_io import save_stage
from jbdiff.core.synth import synth_music
from jbdiff.pipeline import Pipeline

FAST = ["--steps", "2=3,1=3,0=2,dance=2", "--init-strength", "1=0.34,0=0.5,dance=0.5", "--window-multiplier", "1",
        "--crossfade-samples", "512", "--no-progress", "--device", "cpu"]


def _umask() -> int:
    umask = os.umask(0o022)
    os.umask(umask)
    return umask


def _refused(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """Run the command line; it must fail with exit status 2 and one line on stderr."""
    assert main(argv) == 2, argv
    err = capsys.readouterr().err.strip()
    assert err.startswith("jbdiff: error: ") and "\n" not in err and "Traceback" not in err, err
    return err


@pytest.fixture(scope="module")
def seed_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("seed") / "seed.wav"
    save_audio(path, synth_music(1.0))
    return path


@pytest.mark.parametrize("beside", ["o.json", "o.png", "o_take2.wav", "o_take1.png"])
def test_every_file_beside_the_output_needs_overwrite(
    beside: str, tiny_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / beside).write_bytes(b"keep me")
    batch = ["--batch", "2"] if "take" in beside else []
    err = _refused(["generate", "--seconds", "0.2", "-o", str(tmp_path / "o.wav"), "--model", str(tiny_bundle), *batch, *FAST], capsys)
    assert beside in err and "--overwrite" in err
    assert (tmp_path / beside).read_bytes() == b"keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == [beside]


def test_a_running_run_holds_its_outputs(tiny_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A second run on the same outputs is refused while the first runs (its claim names a live process)."""
    first = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (tmp_path / ".o.json.claim").write_text(str(first.pid))
        err = _refused(["generate", "--seconds", "0.2", "-o", str(tmp_path / "o.wav"), "--model", str(tiny_bundle), *FAST], capsys)
        assert f"is being written by another run (process {first.pid})" in err
        assert not (tmp_path / "o.wav").exists()
    finally:
        first.kill()
        first.wait()
    # once that process is gone its claim is stale and taken over; the run's own claims go at the end
    assert main(["generate", "--seconds", "0.2", "-o", str(tmp_path / "o.wav"), "--model", str(tiny_bundle), *FAST]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.json", "o.png", "o.wav"]


def test_an_existing_folder_as_output_is_refused_up_front(tiny_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "o.wav").mkdir()
    err = _refused(["generate", "--seconds", "0.2", "-o", str(tmp_path / "o.wav"), "--model", str(tiny_bundle), "--overwrite", *FAST], capsys)
    assert "is a folder" in err


def test_overwriting_the_input_is_refused(tiny_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = tmp_path / "in.wav"
    save_audio(source, synth_music(1.0))
    before = source.read_bytes()
    for argv in (["remix", str(source), "--strength", "0.5"], ["continue", str(source), "--seconds", "0.2"]):
        err = _refused([*argv, "-o", str(source), "--overwrite", "--model", str(tiny_bundle), *FAST], capsys)
        assert "is an input of this run" in err
    err = _refused(["reconstruct", str(source), str(source), "--codec", str(tiny_bundle), "--overwrite"], capsys)
    assert "is an input of this run" in err
    assert source.read_bytes() == before


def test_a_folder_that_cannot_be_written_is_one_sentence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from jbdiff.core.outputs import check_outputs

    monkeypatch.setattr(os, "access", lambda *args, **kwargs: False)
    with pytest.raises(JbdiffError, match=r"o\.wav: the output folder .* is not writable"):
        check_outputs([tmp_path / "o.wav"], overwrite=False)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_folder_is_refused_before_the_run(tiny_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        assert "is not writable" in _refused(["generate", "--seconds", "0.2", "-o", str(folder / "o.wav"), "--model", str(tiny_bundle), *FAST], capsys)
    finally:
        folder.chmod(0o755)


def test_outputs_follow_the_umask(tiny_bundle: Path, tmp_path: Path) -> None:
    expected = 0o666 & ~_umask()
    pipe = Pipeline.from_pretrained(tiny_bundle, device="cpu")
    fast = pipe.settings.replace(levels=("level2",))
    result = pipe.generate(0.2, settings=fast, out=tmp_path / "o.wav")
    stage = save_stage(torch.nn.Linear(2, 2), tmp_path / "run", "level0", {"model": {}})
    for path in [*result.paths, tmp_path / "o.json", tmp_path / "o.png", stage / "level0.safetensors"]:
        assert stat.S_IMODE(path.stat().st_mode) == expected, path


def test_latent_shards_follow_the_umask(tiny_codec, tmp_path: Path) -> None:
    from levels.latent_shards import encode_folder

    music = tmp_path / "music"
    music.mkdir()
    save_audio(music / "a.wav", synth_music(1.0))
    encode_folder(music, tiny_codec, tmp_path / "latents", codec_source="tiny", progress=False)
    shards = [p for p in (tmp_path / "latents").rglob("*") if p.is_file()]
    assert shards and all(stat.S_IMODE(p.stat().st_mode) == 0o666 & ~_umask() for p in shards)


def test_sigterm_leaves_no_staging_file(tiny_bundle: Path, tmp_path: Path) -> None:
    out = tmp_path / "o.wav"
    run = subprocess.Popen([sys.executable, "-m", "jbdiff.cli", "generate", "--seconds", "600", "-o", str(out),
                            "--model", str(tiny_bundle), *FAST], stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not list(tmp_path.glob(".o.*.part.wav")) and time.monotonic() < deadline and run.poll() is None:
            time.sleep(0.1)
        assert list(tmp_path.glob(".o.*.part.wav")), "the run never started writing"
        run.send_signal(signal.SIGTERM)
        _, err = run.communicate(timeout=60)
    finally:
        run.kill()
    assert run.returncode == 143 and "terminated" in err
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- numbers and sizes


@pytest.mark.parametrize(("options", "message"), [
    (["--guidance", "nan"], "guidance must be a number from 0 to 100, got nan"),
    (["--guidance", "2=inf"], "guidance must be a number from 0 to 100, got inf"),
    (["--steps", "dance=" + "1" + "0" * 21], "steps must be a whole number from 1 to 10000"),
    (["--seed", str(2**70)], "seed must be a number from 0 to"),
    (["--seed", "-1"], "seed must be a number from 0 to"),
    (["--batch", "1000"], "batch must be a number from 1 to 64"),
    (["--window-multiplier", str(10**12)], "window multiplier must be a number from 1 to 64"),
    (["--crossfade-samples", str(10**30)], "crossfade length (samples) must be a number"),
    (["--noise-step", "nan"], "noise step size must be in [0, 1]"),
    (["--init-strength", "nan"], "init strength must be in [0, 1)"),
    (["--levels", ""], "unknown level(s) (none given)"),
])
def test_numbers_are_bounded(options: list[str], message: str, tiny_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    err = _refused(["generate", "--seconds", "0.2", "-o", str(tmp_path / "o.wav"), "--model", str(tiny_bundle), *FAST, *options], capsys)
    assert message in err
    assert list(tmp_path.iterdir()) == []


def test_remix_strength_nan_is_refused(tiny_bundle: Path, seed_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    err = _refused(["remix", str(seed_file), "--strength", "nan", "-o", str(tmp_path / "o.wav"), "--model", str(tiny_bundle), *FAST], capsys)
    assert "remix strength must be in [0, 1], got nan" in err


def test_an_output_beyond_the_free_disk_space_is_refused_with_its_size(
    tiny_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    err = _refused(["generate", "--seconds", "1e9", "-o", str(tmp_path / "o.wav"), "--model", str(tiny_bundle), *FAST], capsys)
    assert "the output needs about 352.8 TB but" in err and "free" in err
    assert list(tmp_path.iterdir()) == []


def test_the_manifest_is_strict_json(tiny_bundle: Path, tmp_path: Path) -> None:
    assert main(["generate", "--seconds", "0.2", "-o", str(tmp_path / "o.wav"), "--model", str(tiny_bundle), *FAST]) == 0

    def refuse(constant: str) -> None:
        raise AssertionError(f"{constant} in the manifest")

    manifest = json.loads((tmp_path / "o.json").read_text(), parse_constant=refuse)
    assert np.isfinite(manifest["settings"]["level2"]["guidance"])
