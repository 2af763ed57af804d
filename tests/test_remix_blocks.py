"""A remix reads its input file a block per pass: the same audio as from the loaded file, in flat memory."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from jbdiff.core.audio import SAMPLE_RATE, load_audio, save_audio
from jbdiff.core.synth import synth_music
from jbdiff.pipeline import Pipeline


def _count_reads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """From now on, the number of frames of every audio-file read, in order."""
    reads: list[int] = []
    original = sf.SoundFile.read

    def counting(self: sf.SoundFile, frames: int = -1, *args: object, **kwargs: object) -> np.ndarray:
        data = original(self, frames, *args, **kwargs)
        reads.append(len(data))
        return data

    monkeypatch.setattr(sf.SoundFile, "read", counting)
    return reads


@pytest.fixture(scope="module")
def pipe(tiny_bundle: Path) -> Pipeline:
    return Pipeline.from_pretrained(tiny_bundle, device="cpu")


@pytest.mark.parametrize("rate", [44100, 48000])
def test_a_file_remixes_as_the_loaded_audio_does(pipe: Pipeline, tmp_path: Path, rate: int) -> None:
    path = tmp_path / "in.wav"
    save_audio(path, np.repeat(synth_music(4.0, sample_rate=rate), 2, axis=0), rate)
    settings = pipe.settings.replace(levels=("level2",))
    from_file = pipe.remix(path, SAMPLE_RATE, 0.5, settings=settings)
    loaded = pipe.remix(load_audio(path, channels=None, sample_rate=rate), rate, 0.5, settings=settings)
    assert from_file.audio is not None and loaded.audio is not None
    assert from_file.audio.shape == loaded.audio.shape
    np.testing.assert_allclose(from_file.audio, loaded.audio, atol=1e-4)


def test_a_long_input_is_never_read_whole(pipe: Pipeline, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "long.wav"
    save_audio(path, synth_music(10.0))
    reads = _count_reads(monkeypatch)
    result = pipe.remix(path, SAMPLE_RATE, 0.3, settings=pipe.settings.replace(levels=("level2",)), out=tmp_path / "o.wav")
    assert result.manifest["samples"] == 10 * SAMPLE_RATE
    assert len(reads) > 3 and max(reads) < 0.25 * 10 * SAMPLE_RATE


def test_a_context_file_is_read_only_near_its_end(pipe: Pipeline, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "context.wav"
    save_audio(path, synth_music(12.0, seed=4))
    source = synth_music(1.0, seed=5)
    settings = pipe.settings.replace(levels=("level2",))
    loaded = pipe.remix(source, SAMPLE_RATE, 0.5, context=(load_audio(path, channels=None), SAMPLE_RATE), settings=settings)
    reads = _count_reads(monkeypatch)
    from_file = pipe.remix(source, SAMPLE_RATE, 0.5, context=path, settings=settings)
    assert from_file.audio is not None and loaded.audio is not None
    np.testing.assert_array_equal(from_file.audio, loaded.audio)  # the same context, from the file's end
    assert reads and sum(reads) < 0.5 * 12 * SAMPLE_RATE
