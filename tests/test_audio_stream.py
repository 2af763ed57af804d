"""Streaming audio to a file: atomic, flat memory, no clipping."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from jbdiff.core.audio import AudioError, audio_info, load_audio
from jbdiff.core.audio_stream import AudioStreamWriter


def _pieces(seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.uniform(-0.5, 0.5, size=(2, n)).astype(np.float32) for n in (1000, 1, 4410, 0, 777)]


def test_wav_pieces_join_exactly(tmp_path: Path) -> None:
    out = tmp_path / "o.wav"
    with AudioStreamWriter(out, 2, 44100) as writer:
        for piece in _pieces():
            writer.write(piece)
    assert np.array_equal(load_audio(out, channels=None), np.concatenate(_pieces(), axis=1))
    assert [p.name for p in tmp_path.iterdir()] == ["o.wav"]


def test_flac_peaks_above_one_are_scaled_not_clipped(tmp_path: Path) -> None:
    out = tmp_path / "o.flac"
    loud = [p * 4 for p in _pieces()]
    with AudioStreamWriter(out, 2, 44100) as writer:
        for piece in loud:
            writer.write(piece)
    got = load_audio(out, channels=None)
    expected = np.concatenate(loud, axis=1)
    assert np.abs(got).max() < 1.0
    assert np.corrcoef(got.ravel(), expected.ravel())[0, 1] > 0.9999
    assert audio_info(out).channels == 2 and [p.name for p in tmp_path.iterdir()] == ["o.flac"]


@pytest.mark.parametrize("name", ["o.wav", "o.ogg"])
def test_an_interrupted_stream_leaves_nothing(tmp_path: Path, name: str) -> None:
    out = tmp_path / name
    with pytest.raises(KeyboardInterrupt), AudioStreamWriter(out, 2, 44100) as writer:
        writer.write(_pieces()[0])
        raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


def test_bad_pieces_and_empty_streams_are_refused(tmp_path: Path) -> None:
    with pytest.raises(AudioError, match="NaN"), AudioStreamWriter(tmp_path / "a.wav", 1, 44100) as writer:
        writer.write(np.full((1, 10), np.nan, dtype=np.float32))
    with pytest.raises(AudioError, match="zero length"), AudioStreamWriter(tmp_path / "b.wav", 1, 44100):
        pass
    with pytest.raises(AudioError, match="does not exist"):
        AudioStreamWriter(tmp_path / "missing" / "c.wav", 1, 44100)
    assert list(tmp_path.iterdir()) == []


def test_a_killed_writers_staging_file_is_removed_by_the_next_write(tmp_path: Path) -> None:
    out = tmp_path / "o.flac"
    script = (
        "import os, signal, sys, numpy as np\n"
        "from jbdiff.core.audio_stream import AudioStreamWriter\n"
        "writer = AudioStreamWriter(sys.argv[1], 1, 44100).__enter__()\n"
        "writer.write(np.zeros((1, 4410), np.float32))\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    killed = subprocess.run([sys.executable, "-c", script, str(out)], check=False)
    assert killed.returncode == -signal.SIGKILL
    orphan = [p.name for p in tmp_path.iterdir()]
    assert len(orphan) == 1 and orphan[0].startswith(".o.") and orphan[0].endswith(".part.wav")

    with subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]) as other:
        live = tmp_path / f".o.{other.pid}.abcd1234.part.wav"  # a staging file of a process still writing
        live.touch()
        with AudioStreamWriter(out, 1, 44100) as writer:
            writer.write(_pieces()[0][:1])
        other.kill()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, "o.flac"])
