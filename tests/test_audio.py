"""Tests for jbdiff.core.audio: reading, writing, resampling, validation and listing."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from jbdiff.core.audio import (
    MAX_CHANNELS,
    SUPPORTED_EXTENSIONS,
    AudioError,
    AudioInfo,
    audio_info,
    list_audio_files,
    load_audio,
    save_audio,
    to_mono,
)

SR = 44100


def tone(freq: float, seconds: float = 1.0, sr: int = SR, amplitude: float = 0.5) -> np.ndarray:
    """A sine tone shaped (samples,)."""
    t = np.arange(round(seconds * sr)) / sr
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def chord(seconds: float = 1.0, sr: int = SR) -> np.ndarray:
    """A stereo chord with a little noise, shaped (2, samples)."""
    rng = np.random.default_rng(0)
    left = tone(220, seconds, sr, 0.3) + tone(277.2, seconds, sr, 0.2)
    right = tone(329.6, seconds, sr, 0.3) + 0.01 * rng.standard_normal(left.shape[0]).astype(np.float32)
    return np.stack([left, right])


def peak_frequency(signal: np.ndarray, sr: int) -> float:
    """Frequency (Hz) of the strongest FFT bin of a 1-D signal."""
    spectrum = np.abs(np.fft.rfft(signal * np.hanning(signal.shape[0])))
    return float(np.argmax(spectrum) * sr / signal.shape[0])


def write(path: Path, audio: np.ndarray, sr: int = SR, **kwargs: str) -> Path:
    """Write (channels, samples) or (samples,) audio with soundfile directly."""
    sf.write(path, audio.T, sr, **kwargs)
    return path


# Round trips and compressed formats


@pytest.mark.parametrize("suffix", [".wav", ".flac"])
def test_lossless_round_trip(tmp_path: Path, suffix: str) -> None:
    audio = chord()
    path = save_audio(tmp_path / f"chord{suffix}", audio)
    assert path == tmp_path / f"chord{suffix}"
    loaded = load_audio(path, channels=None)
    assert loaded.dtype == np.float32
    assert loaded.shape == audio.shape
    np.testing.assert_allclose(loaded, audio, atol=0 if suffix == ".wav" else 1e-6)


def test_ogg_round_trip(tmp_path: Path) -> None:
    audio = np.stack([tone(440), tone(880)])
    loaded = load_audio(save_audio(tmp_path / "tone.ogg", audio), channels=None)
    assert loaded.shape == audio.shape
    assert peak_frequency(loaded[0], SR) == pytest.approx(440, abs=2)
    assert peak_frequency(loaded[1], SR) == pytest.approx(880, abs=2)


@pytest.mark.parametrize(
    ("name", "file_format", "subtype", "rate"),
    [("tone.mp3", "MP3", "MPEG_LAYER_III", SR), ("tone.opus", "OGG", "OPUS", 48000)],
)
def test_reads_compressed_formats(tmp_path: Path, name: str, file_format: str, subtype: str, rate: int) -> None:
    path = tmp_path / name
    try:
        write(path, tone(1000, sr=rate), rate, format=file_format, subtype=subtype)
    except sf.LibsndfileError as error:
        pytest.skip(f"this libsndfile cannot write {subtype}: {error}")
    loaded = load_audio(path)
    assert loaded.shape[0] == 1
    assert loaded.shape[1] == pytest.approx(SR, rel=0.05)
    assert peak_frequency(loaded[0], SR) == pytest.approx(1000, abs=2)


def test_save_accepts_torch_tensor_and_1d(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    audio = tone(440)
    save_audio(tmp_path / "a.wav", torch.from_numpy(audio).double().requires_grad_())
    save_audio(tmp_path / "b.wav", audio)
    for name in ("a.wav", "b.wav"):
        np.testing.assert_allclose(load_audio(tmp_path / name)[0], audio, atol=1e-7)


def test_audio_info(tmp_path: Path) -> None:
    path = write(tmp_path / "chord.flac", chord(seconds=0.5, sr=22050), 22050)
    info = audio_info(path)
    assert info == AudioInfo(path=path, sample_rate=22050, channels=2, frames=11025)
    assert info.duration == pytest.approx(0.5)


def test_supported_extensions() -> None:
    assert SUPPORTED_EXTENSIONS == {".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3"}
    assert MAX_CHANNELS == 8


# Resampling, channels, segments


@pytest.mark.parametrize("rate", [48000, 22050])
def test_resampling_keeps_frequency_and_duration(tmp_path: Path, rate: int) -> None:
    path = write(tmp_path / "tone.wav", tone(1000, sr=rate), rate, subtype="FLOAT")
    loaded = load_audio(path)
    assert loaded.shape == (1, SR)
    assert peak_frequency(loaded[0], SR) == pytest.approx(1000, abs=1)


def test_resamples_to_requested_rate(tmp_path: Path) -> None:
    path = save_audio(tmp_path / "tone.wav", tone(1000))
    loaded = load_audio(path, sample_rate=16000)
    assert loaded.shape == (1, 16000)
    assert peak_frequency(loaded[0], 16000) == pytest.approx(1000, abs=1)


def test_channel_conversion(tmp_path: Path) -> None:
    stereo = chord()
    stereo_path = save_audio(tmp_path / "stereo.wav", stereo)
    mono = load_audio(stereo_path)
    assert mono.shape == (1, stereo.shape[1])
    np.testing.assert_allclose(mono, stereo.mean(axis=0, keepdims=True), atol=1e-7)
    assert load_audio(stereo_path, channels=2).shape == stereo.shape

    mono_path = save_audio(tmp_path / "mono.wav", tone(440))
    duplicated = load_audio(mono_path, channels=2)
    assert duplicated.shape == (2, SR)
    np.testing.assert_array_equal(duplicated[0], duplicated[1])

    quad = np.stack([tone(f) for f in (220, 330, 440, 550)])
    quad_path = save_audio(tmp_path / "quad.wav", quad)
    np.testing.assert_array_equal(load_audio(quad_path, channels=2), quad[:2])
    assert load_audio(quad_path, channels=None).shape == (4, SR)
    with pytest.raises(ValueError, match="channels"):
        load_audio(quad_path, channels=3)


@pytest.mark.parametrize(("suffix", "subtype"), [(".wav", "PCM_16"), (".flac", "PCM_24")])
def test_offset_and_duration_read_exact_samples(tmp_path: Path, suffix: str, subtype: str) -> None:
    path = write(tmp_path / f"chord{suffix}", chord(seconds=2.0), subtype=subtype)
    full = load_audio(path, channels=None)
    part = load_audio(path, channels=None, offset=0.5, duration=0.25)
    np.testing.assert_array_equal(part, full[:, 22050:33075])
    tail = load_audio(path, channels=None, offset=1.5, duration=10.0)
    np.testing.assert_array_equal(tail, full[:, 66150:])


def test_peaks_above_one_are_kept_on_load(tmp_path: Path) -> None:
    path = write(tmp_path / "loud.wav", tone(440, amplitude=1.4), subtype="FLOAT")
    assert np.abs(load_audio(path)).max() == pytest.approx(1.4, rel=1e-6)


def test_to_mono() -> None:
    audio = np.array([[1.0, 2.0], [3.0, 6.0]], dtype=np.float32)
    mono = to_mono(audio)
    assert mono.dtype == np.float32
    np.testing.assert_array_equal(mono, [[2.0, 4.0]])


# Load errors


def _missing(tmp_path: Path) -> Path:
    return tmp_path / "missing.wav"


def _directory(tmp_path: Path) -> Path:
    path = tmp_path / "folder.wav"
    path.mkdir()
    return path


def _text(tmp_path: Path) -> Path:
    path = tmp_path / "notes.wav"
    path.write_text("these are not audio samples\n" * 20)
    return path


def _cut_header(tmp_path: Path) -> Path:
    path = write(tmp_path / "header.wav", tone(440))
    path.write_bytes(path.read_bytes()[:20])
    return path


def _empty(tmp_path: Path) -> Path:
    return write(tmp_path / "empty.wav", np.zeros((1, 0), dtype=np.float32))


def _nine_channels(tmp_path: Path) -> Path:
    return write(tmp_path / "nine.wav", np.full((9, 100), 0.1, dtype=np.float32))


def _nan(tmp_path: Path) -> Path:
    audio = tone(440, seconds=0.1)
    audio[100] = np.nan
    return write(tmp_path / "nan.wav", audio, subtype="FLOAT")


def _inf(tmp_path: Path) -> Path:
    audio = tone(440, seconds=0.1)
    audio[100] = np.inf
    return write(tmp_path / "inf.wav", audio, subtype="FLOAT")


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (_missing, "no such file"),
        (_directory, "directory"),
        (_text, "libsndfile can read"),
        (_cut_header, "libsndfile can read"),
        (_empty, "zero length"),
        (_nine_channels, "9 channels"),
        (_nan, "NaN"),
        (_inf, "infinite"),
    ],
)
def test_load_errors_name_the_file(tmp_path: Path, make: Callable[[Path], Path], expected: str) -> None:
    path = make(tmp_path)
    with pytest.raises(AudioError, match=expected) as caught:
        load_audio(path)
    assert path.name in str(caught.value)


@pytest.mark.parametrize("make", [_missing, _directory, _text, _cut_header, _empty, _nine_channels])
def test_audio_info_errors(tmp_path: Path, make: Callable[[Path], Path]) -> None:
    path = make(tmp_path)
    with pytest.raises(AudioError, match=path.name):
        audio_info(path)


def test_min_duration(tmp_path: Path) -> None:
    path = write(tmp_path / "short.wav", tone(440, seconds=0.2))
    assert load_audio(path, min_duration=0.2).shape == (1, 8820)
    with pytest.raises(AudioError, match=r"short\.wav.*is 0\.20 s long but at least 1\.00 s is needed"):
        load_audio(path, min_duration=1.0)
    with pytest.raises(AudioError, match=r"0\.10 s long"):
        load_audio(path, offset=0.1, min_duration=0.15)


def test_offset_past_end(tmp_path: Path) -> None:
    path = write(tmp_path / "short.wav", tone(440, seconds=0.5))
    with pytest.raises(AudioError, match=r"short\.wav.*offset 2\.00 s is past the end"):
        load_audio(path, offset=2.0)


@pytest.mark.parametrize(("suffix", "subtype"), [(".wav", "PCM_16"), (".flac", "PCM_16")])
def test_truncated_file_raises_or_returns_readable_audio(tmp_path: Path, suffix: str, subtype: str) -> None:
    path = write(tmp_path / f"cut{suffix}", tone(440), subtype=subtype)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    try:
        audio = load_audio(path)
    except AudioError as error:
        assert path.name in str(error)
    else:
        assert 0 < audio.shape[1] < SR
        assert np.isfinite(audio).all()


# Saving


def test_flac_save_scales_loud_signal(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    audio = tone(440, amplitude=1.4)
    with caplog.at_level(logging.WARNING, logger="jbdiff.core.audio"):
        path = save_audio(tmp_path / "loud.flac", audio)
    assert any("loud.flac" in record.getMessage() and "1.400" in record.getMessage() for record in caplog.records)
    loaded = load_audio(path)
    assert np.abs(loaded).max() <= 1.0
    np.testing.assert_allclose(loaded[0], audio * (0.999 / 1.4), atol=1e-6)


def test_ogg_save_scales_loud_signal(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="jbdiff.core.audio"):
        save_audio(tmp_path / "loud.ogg", tone(440, amplitude=1.4))
    assert any("loud.ogg" in record.getMessage() for record in caplog.records)


def test_wav_save_keeps_loud_signal(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    audio = tone(440, amplitude=1.4)
    with caplog.at_level(logging.WARNING, logger="jbdiff.core.audio"):
        path = save_audio(tmp_path / "loud.wav", audio)
    assert not caplog.records
    assert sf.info(path).subtype == "FLOAT"
    np.testing.assert_array_equal(load_audio(path)[0], audio)


def test_save_rejects_unsupported_extension(tmp_path: Path) -> None:
    with pytest.raises(AudioError, match=r"song\.mp3.*\.flac, \.ogg, \.wav"):
        save_audio(tmp_path / "song.mp3", tone(440))
    assert not list(tmp_path.iterdir())


def test_save_rejects_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(AudioError, match=r"out\.wav.*does not exist"):
        save_audio(tmp_path / "nowhere" / "out.wav", tone(440))


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_save_rejects_non_finite_and_writes_nothing(tmp_path: Path, bad: float) -> None:
    audio = tone(440)
    audio[10] = bad
    with pytest.raises(AudioError, match=r"out\.flac.*NaN or infinite"):
        save_audio(tmp_path / "out.flac", audio)
    assert not list(tmp_path.iterdir())


def test_save_rejects_bad_shape(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="shape"):
        save_audio(tmp_path / "out.wav", np.zeros((SR, 2), dtype=np.float32))


def test_failed_write_leaves_no_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = save_audio(tmp_path / "out.wav", tone(440))
    before = target.read_bytes()

    def interrupted_write(file: Path, *args: object, **kwargs: object) -> None:
        Path(file).write_bytes(b"RIFF partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(sf, "write", interrupted_write)
    with pytest.raises(KeyboardInterrupt):
        save_audio(target, tone(880))
    with pytest.raises(KeyboardInterrupt):
        save_audio(tmp_path / "new.flac", tone(880))
    assert list(tmp_path.iterdir()) == [target]
    assert target.read_bytes() == before


def test_successful_save_leaves_only_target(tmp_path: Path) -> None:
    for suffix in (".wav", ".flac", ".ogg"):
        save_audio(tmp_path / f"out{suffix}", chord(seconds=0.1))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.flac", "out.ogg", "out.wav"]


# Listing


def test_list_audio_files(tmp_path: Path) -> None:
    for relative in [
        "b.wav",
        "a.FLAC",
        "notes.txt",
        "sub/deeper/c.mp3",
        "sub/d.opus",
        "sub/e.oga",
        "sub/f.ogg",
        "sub/cover.jpg",
        ".hidden.wav",
        ".cache/g.wav",
        "sub/.h.flac",
    ]:
        path = tmp_path / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"not opened")
    (tmp_path / "folder.wav").mkdir()
    expected = ["a.FLAC", "b.wav", "sub/d.opus", "sub/deeper/c.mp3", "sub/e.oga", "sub/f.ogg"]
    assert list_audio_files(tmp_path) == [tmp_path / name for name in expected]
    assert list_audio_files(str(tmp_path / "sub" / "deeper")) == [tmp_path / "sub/deeper/c.mp3"]


def test_list_audio_files_errors(tmp_path: Path) -> None:
    with pytest.raises(AudioError, match=r"absent.*no such folder"):
        list_audio_files(tmp_path / "absent")
    file = tmp_path / "file.wav"
    file.write_bytes(b"")
    with pytest.raises(AudioError, match=r"file\.wav.*not a folder"):
        list_audio_files(file)
