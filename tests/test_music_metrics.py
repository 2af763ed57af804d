"""Every metric on synthetic audio or data where the answer is known."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.linalg

from jbdiff.core.synth import synth_music
from jbdiff.metrics import music as mm
from jbdiff.metrics import musicnn

SR = 22050


pytestmark = pytest.mark.usefixtures("one_thread")


def _tone(freq: float, seconds: float, amplitude: float = 0.3, sr: int = SR, phase: float = 0.0) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return (amplitude * np.sin(2 * np.pi * freq * t + phase)).astype(np.float32)


def _progression(tonic: int, minor: bool, seconds_per_chord: float = 1.0) -> np.ndarray:
    """I-IV-V-I (i-iv-V-i in minor) triads in the key, equal-tempered, from C4."""
    t = np.arange(int(seconds_per_chord * SR)) / SR
    third = 3 if minor else 4
    chords = [(0, third, 7), (5, 5 + third, 12), (7, 11, 14), (0, third, 7)]
    return np.concatenate(
        [sum(np.sin(2 * np.pi * 261.63 * 2 ** ((tonic + n) / 12) * t) for n in chord) / 6 for chord in chords]
    )


# --- Fréchet distance ---------------------------------------------------------------------


def test_frechet_distance_of_identical_sets_is_zero_also_with_few_samples() -> None:
    rng = np.random.default_rng(0)
    for n, d in ((500, 8), (6, 200), (1, 200)):  # many samples, fewer samples than dims, one sample
        x = rng.standard_normal((n, d))
        assert mm.frechet_distance(x, x) == pytest.approx(0.0, abs=1e-6 * d)


def test_frechet_distance_matches_gaussian_closed_form_and_scipy() -> None:
    rng = np.random.default_rng(1)
    d, mu = 6, np.full(6, 0.5)
    a = rng.standard_normal((20000, d))
    b = mu + 2.0 * rng.standard_normal((20000, d))
    # N(0, I) vs N(mu, 4I): |mu|^2 + d (1 + 4 - 2 * 2)
    assert mm.frechet_distance(a, b) == pytest.approx(mu @ mu + d, rel=0.03)
    x, y = rng.standard_normal((50, 10)), rng.standard_normal((40, 10)) @ rng.standard_normal((10, 10))
    cx, cy = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    diff = x.mean(0) - y.mean(0)
    expected = diff @ diff + np.trace(cx + cy - 2 * scipy.linalg.sqrtm(cx @ cy).real)
    assert mm.frechet_distance(x, y) == pytest.approx(expected, rel=1e-6)
    assert mm.frechet_distance(y, x) == pytest.approx(expected, rel=1e-6)
    one_a, one_b = x[:1], y[:1]
    assert mm.frechet_distance(one_a, one_b) == pytest.approx(float(np.sum((one_a - one_b) ** 2)))
    with pytest.raises(ValueError):
        mm.frechet_distance(x, y[:, :5])


def test_frechet_distance_on_musicnn_embeddings_separates_music_from_noise() -> None:
    rng = np.random.default_rng(2)
    music = [musicnn.embeddings(synth_music(3.0, SR, seed=s)[0], SR) for s in range(3)]
    other_music = [musicnn.embeddings(synth_music(3.0, SR, seed=s)[0], SR) for s in range(3, 6)]
    noise = [musicnn.embeddings(0.2 * rng.standard_normal(3 * SR).astype(np.float32), SR) for _ in range(3)]
    same = mm.frechet_distance(np.concatenate(music), np.concatenate(other_music))
    different = mm.frechet_distance(np.concatenate(music), np.concatenate(noise))
    assert different > 20 * same  # measured: 54x


# --- tag KL -------------------------------------------------------------------------------


def test_tag_kl_known_values() -> None:
    assert mm.tag_kl([0.2, 0.2], [0.4, 0.4]) == pytest.approx(0.0, abs=1e-9)  # same distribution over tags
    # [0.5, 0.5] against [0.25, 0.75]
    expected = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)
    assert mm.tag_kl([0.2, 0.2], [0.1, 0.3], eps=0.0) == pytest.approx(expected)
    per_patch = np.array([[0.1, 0.3], [0.3, 0.1]])  # patches average to [0.2, 0.2]
    assert mm.tag_kl(per_patch, [0.5, 0.5]) == pytest.approx(0.0, abs=1e-9)
    with pytest.raises(ValueError):
        mm.tag_kl([0.1, 0.2], [0.1, 0.2, 0.3])


def test_tag_kl_tone_vs_noise_is_larger_than_between_music_clips() -> None:
    rng = np.random.default_rng(3)
    a = musicnn.tag_probabilities(synth_music(3.0, SR, seed=0)[0], SR)
    b = musicnn.tag_probabilities(synth_music(3.0, SR, seed=1)[0], SR)
    tone = musicnn.tag_probabilities(_tone(220.0, 3.0), SR)
    noise = musicnn.tag_probabilities(0.2 * rng.standard_normal(3 * SR).astype(np.float32), SR)
    assert mm.tag_kl(a, a) == pytest.approx(0.0, abs=1e-9)
    assert mm.tag_kl(tone, noise) > 20 * mm.tag_kl(a, b)  # measured: 230x


# --- key and chroma -----------------------------------------------------------------------


@pytest.mark.parametrize(("tonic", "minor"), [(0, False), (2, False), (7, False), (9, True), (6, True)])
def test_estimate_key_of_cadences(tonic: int, minor: bool) -> None:
    assert mm.estimate_key(mm.mean_chroma(_progression(tonic, minor), SR)) == mm.Key(tonic, minor)


def test_chroma_correlation() -> None:
    c_major = mm.mean_chroma(_progression(0, False), SR)
    assert mm.chroma_correlation(c_major, mm.mean_chroma(_progression(0, False)[::-1].copy(), SR)) > 0.99
    assert mm.chroma_correlation(c_major, mm.mean_chroma(_progression(6, False), SR)) < 0.0  # tritone away
    assert mm.chroma_correlation(c_major, np.ones(12)) == 0.0  # flat profile: no pitch information


def test_key_agreement_follows_mirex_weights_both_ways() -> None:
    c, g, f, a_minor, c_minor, d = mm.Key(0, False), mm.Key(7, False), mm.Key(5, False), mm.Key(9, True), mm.Key(0, True), mm.Key(2, False)
    cases = [(c, c, 1.0), (c, g, 0.5), (c, f, 0.5), (c, a_minor, 0.3), (c, c_minor, 0.2), (c, d, 0.0), (a_minor, mm.Key(4, True), 0.5)]
    for first, second, score in cases:
        assert mm.key_agreement(first, second) == score
        assert mm.key_agreement(second, first) == score
    assert str(a_minor) == "A minor"


# --- seams --------------------------------------------------------------------------------


def test_seam_score_is_large_at_a_hard_cut_and_about_one_on_a_smooth_signal() -> None:
    rng = np.random.default_rng(4)
    smooth = _tone(440.0, 6.0) + 0.003 * rng.standard_normal(6 * SR).astype(np.float32)
    seam = 3 * SR + 1234
    cut = smooth.copy()
    cut[seam:] = _tone(620.0, 6.0, amplitude=0.5, phase=1.0)[seam:] + 0.003 * rng.standard_normal(6 * SR - seam)
    smooth_score, cut_score = mm.seam_discontinuity(smooth, SR, [seam]), mm.seam_discontinuity(cut, SR, [seam])
    assert 0.7 < smooth_score < 1.4
    assert cut_score > 4.0
    # the same cut, reported among seams where nothing happens, still raises the mean
    assert smooth_score < mm.seam_discontinuity(cut, SR, [seam, SR, 5 * SR]) < cut_score
    assert math.isnan(mm.seam_discontinuity(cut, SR, []))
    assert math.isnan(mm.seam_discontinuity(cut, SR, [len(cut) + 10]))  # outside the clip


def test_spectral_flux_is_zero_for_silence_and_peaks_at_an_onset() -> None:
    signal = np.zeros(2 * SR, dtype=np.float32)
    assert np.all(mm.spectral_flux(signal, SR) == 0)
    signal[SR:] = _tone(440.0, 1.0)
    flux = mm.spectral_flux(signal, SR, hop=512)
    assert abs(int(np.argmax(flux)) - SR / 512) <= 2


# --- loudness and silence -----------------------------------------------------------------


def test_silence_clipping_and_level() -> None:
    silence = np.zeros((2, SR), dtype=np.float32)
    assert mm.silent_fraction(silence, SR) == 1.0
    assert mm.rms_db(silence) == mm.SILENCE_DB
    assert mm.clipped_fraction(silence) == 0.0

    tone = _tone(440.0, 2.0, amplitude=0.5)
    assert mm.rms_db(tone) == pytest.approx(20 * math.log10(0.5 / math.sqrt(2)), abs=0.01)
    assert mm.silent_fraction(tone, SR) == 0.0
    half = np.concatenate([np.zeros(SR, dtype=np.float32), _tone(440.0, 1.0)])
    assert mm.silent_fraction(half, SR) == pytest.approx(0.5, abs=0.03)
    quiet = _tone(440.0, 1.0, amplitude=10 ** (-70 / 20))  # -73 dBFS RMS
    assert mm.silent_fraction(quiet, SR) == 1.0
    assert mm.silent_fraction(quiet, SR, threshold_db=-80.0) == 0.0

    clipped = np.clip(2.0 * _tone(440.0, 1.0, amplitude=1.0), -1.0, 1.0)  # |2 sin| >= 1 two thirds of the time
    assert mm.clipped_fraction(clipped) == pytest.approx(1 - 2 / math.pi * math.asin(0.4995), abs=0.005)
    assert mm.clipped_fraction(0.5 * clipped) == 0.0
