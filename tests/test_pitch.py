"""Note transcription (basic-pitch's ONNX network) and tonalness on known answers: tones, chords, noise."""

from __future__ import annotations

import numpy as np
import pytest

from jbdiff.core.audio import SAMPLE_RATE
from jbdiff.core.errors import JbdiffError
from jbdiff.core.synth import synth_music
from jbdiff.metrics import pitch

SR = SAMPLE_RATE
C, E, G, A = 0, 4, 7, 9


def _tone(midi: int, seconds: float, partials: int = 4) -> np.ndarray:
    """A harmonic tone (partials at 1/k amplitude) with a short attack and release."""
    t = np.arange(round(seconds * SR)) / SR
    f0 = 440.0 * 2 ** ((midi - 69) / 12)
    tone = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, partials + 1))
    envelope = np.minimum(1.0, np.minimum(t, t[-1] - t) / 0.01)
    return tone * envelope


def _clip(*parts: np.ndarray, lead: float = 0.25) -> np.ndarray:
    """Silence, then the parts one after another, normalised to a 0.3 peak: ``(1, samples)`` float32."""
    audio = np.concatenate([np.zeros(round(lead * SR)), *parts])
    return (0.3 * audio / np.abs(audio).max())[None].astype(np.float32)


@pytest.fixture(scope="module")
def white_noise() -> np.ndarray:
    return (0.1 * np.random.default_rng(0).standard_normal(4 * SR))[None].astype(np.float32)


def test_a_single_a4_is_one_note_of_pitch_class_a() -> None:
    result = pitch.transcribe(_clip(_tone(69, 3.0)), SR)
    assert [n.pitch for n in result.notes] == [69]
    assert result.notes[0].start == pytest.approx(0.25, abs=0.05)
    assert result.notes[0].end == pytest.approx(3.25, abs=0.15)
    assert pitch.top_pitch_classes(result.profile) == {A}
    assert result.profile.sum() == pytest.approx(1.0)


def test_a_c_major_chord_gives_c_e_and_g() -> None:
    chord = _tone(60, 3.0) + _tone(64, 3.0) + _tone(67, 3.0)
    result = pitch.transcribe(_clip(chord), SR)
    assert pitch.top_pitch_classes(result.profile) == {C, E, G}
    assert {60, 64, 67} <= {n.pitch for n in result.notes}
    assert pitch.tonalness(_clip(chord), SR) > 0.95


def test_white_noise_has_almost_no_tonalness_and_few_notes(white_noise: np.ndarray) -> None:
    assert pitch.tonalness(white_noise, SR) < 0.05
    assert pitch.transcribe(white_noise, SR).note_density < 0.5
    assert pitch.tonalness(np.zeros((1, SR), dtype=np.float32), SR) == 0.0


def test_note_density_counts_a_melody() -> None:
    melody = [_tone(midi, 0.4, partials=1) for midi in (60, 62, 64, 65, 67, 69, 71, 72)]  # 8 notes in 3.2 s
    result = pitch.transcribe(_clip(*melody, lead=0.3), SR)
    assert [n.pitch for n in result.notes] == [60, 62, 64, 65, 67, 69, 71, 72]
    np.testing.assert_allclose([n.start for n in result.notes], 0.3 + 0.4 * np.arange(8), atol=0.05)
    assert result.seconds == pytest.approx(3.5, abs=1e-3)
    assert result.note_density == pytest.approx(8 / 3.5)


def test_pitch_class_agreement_follows_the_harmony(white_noise: np.ndarray) -> None:
    c_major = pitch.transcribe(_clip(_tone(60, 2.0) + _tone(64, 2.0) + _tone(67, 2.0)), SR).profile
    c_major_high = pitch.transcribe(_clip(_tone(72, 2.0) + _tone(76, 2.0) + _tone(79, 2.0)), SR).profile
    f_sharp = pitch.transcribe(_clip(_tone(66, 2.0) + _tone(70, 2.0) + _tone(73, 2.0)), SR).profile
    assert pitch.pitch_class_agreement(c_major, c_major_high) > 0.9
    assert pitch.pitch_class_agreement(c_major, f_sharp) < 0.0
    assert pitch.pitch_class_agreement(c_major, np.zeros(12)) == 0.0  # no pitch, no agreement


def test_posteriorgram_frames_follow_basic_pitchs_framing() -> None:
    audio = synth_music(5.0, seed=1)
    note, onset = pitch.posteriorgrams(audio, SR)
    frames = int(np.floor(5.0 * pitch.MODEL_RATE * pitch.FRAME_RATE / pitch.MODEL_RATE))
    assert note.shape == onset.shape == (frames, 88)
    assert 0.0 <= note.min() and note.max() <= 1.0
    # the same audio at another rate is resampled to the model's: the same notes
    at_22k = pitch.transcribe(audio[:, ::2], SR // 2)
    assert abs(len(at_22k.notes) - len(pitch.transcribe(audio, SR).notes)) <= 2


def test_a_missing_model_is_one_sentence(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pitch, "_MODEL_FILE", ("saved_models", "absent.onnx"))
    with pytest.raises(JbdiffError, match=r"^note transcription needs basic-pitch's ONNX model and onnxruntime: pip install"):
        pitch.transcribe(_clip(_tone(69, 1.0)), SR)
