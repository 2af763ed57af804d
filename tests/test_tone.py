"""Tone matching: known answers on white and filtered noise."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.signal
import torch

from jbdiff.core.tone import ToneMatch, band_centres, band_powers

SR = 44100


def _noise(seconds: float, seed: int, channels: int = 1) -> torch.Tensor:
    return torch.randn(channels, round(seconds * SR), generator=torch.Generator().manual_seed(seed)) * 0.1


def _lowpass(audio: torch.Tensor, hz: float, order: int) -> torch.Tensor:
    sos = scipy.signal.butter(order, hz, fs=SR, output="sos")
    return torch.from_numpy(scipy.signal.sosfilt(sos, audio.numpy()).astype(np.float32))


def _shape_db(audio: torch.Tensor) -> torch.Tensor:
    power = band_powers(audio, SR)
    return 10 * torch.log10(power / power.sum(-1, keepdim=True))


def test_bands_are_third_octaves_below_nyquist() -> None:
    centres = band_centres(SR)
    assert centres[0] == 50.0 and centres[-1] * 2 ** (1 / 6) < SR / 2
    assert torch.allclose(centres[1:] / centres[:-1], torch.tensor(2 ** (1 / 3), dtype=torch.float64))


def test_matching_a_recording_to_itself_changes_nothing() -> None:
    audio = _lowpass(_noise(2.0, 0, channels=2), 3000, 2)
    match = ToneMatch.fit(audio, audio[None], SR)
    assert match.gains_db.abs().max() < 1e-3
    assert torch.allclose(match.apply(audio[None])[0], audio, atol=1e-5)


def test_a_dull_recording_gets_the_reference_spectrum_at_the_same_power() -> None:
    reference = _noise(3.0, 1)
    dull = _lowpass(_noise(3.0, 2), 4000, 1)[None]  # 6 dB per octave: within the 12 dB limit up to about 16 kHz
    matched = ToneMatch.fit(reference, dull, SR, max_boost_db=12.0).apply(dull)
    before = (_shape_db(dull[0]) - _shape_db(reference)).abs()
    after = (_shape_db(matched[0]) - _shape_db(reference)).abs()
    assert before.max() > 10 and after[:-1].max() < 1.0  # the top band touches the limit
    assert 10 * torch.log10(matched.square().mean() / dull.square().mean()).abs() < 0.3


def test_gains_are_limited_and_silent_bands_are_not_lifted() -> None:
    reference = _noise(2.0, 3)
    steep = _lowpass(_noise(2.0, 4), 1000, 12)[None]  # above about 2 kHz, more than 60 dB down
    match = ToneMatch.fit(reference, steep, SR, max_boost_db=6.0, max_cut_db=6.0)
    gains = match.gains_db[0]
    assert float(gains.max() - gains.min()) <= 12.0 + 1e-4
    silent = band_centres(SR) > 4000
    assert torch.allclose(gains[silent], gains[silent][0].expand(int(silent.sum())))
    assert bool((gains[silent] <= gains.max() - 6.0 + 1e-4).all())  # left at 0 dB, below the lifted bands


def test_what_the_reference_lacks_is_cut_down_to_the_limit() -> None:
    reference = _lowpass(_noise(2.0, 5), 1000, 12)
    bright = _noise(2.0, 6)[None]
    gains = ToneMatch.fit(reference, bright, SR, max_boost_db=12.0, max_cut_db=20.0).gains_db[0]
    high, low = band_centres(SR) > 4000, band_centres(SR) < 500
    assert torch.allclose(gains[high] - gains[low].mean(), torch.tensor(-20.0 - 12.0), atol=1e-3)  # both at their limits


def test_each_take_gets_its_own_gains() -> None:
    reference = _noise(2.0, 7)
    takes = torch.stack([_lowpass(_noise(2.0, 6), 2000, 1), _noise(2.0, 7)])
    match = ToneMatch.fit(reference, takes, SR, max_boost_db=12.0)
    assert match.gains_db.shape == (2, len(band_centres(SR)))
    assert match.gains_db[0].max() > 6 and match.gains_db[1].abs().max() < 1.5
    assert torch.allclose(match.apply(takes)[1], ToneMatch(match.gains_db[1:], SR).apply(takes[1:])[0], atol=1e-6)


def test_a_silent_take_stays_silent() -> None:
    takes = torch.stack([torch.zeros(1, SR), _noise(1.0, 11)])
    match = ToneMatch.fit(_lowpass(_noise(1.0, 12), 2000, 2), takes, SR)
    assert bool((match.gains_db[0] == 0).all()) and match.gains_db[1].abs().max() > 3
    assert bool((match.apply(takes)[0] == 0).all())


@pytest.mark.parametrize("samples", [1, 100, 10_000])
def test_short_audio_keeps_its_length(samples: int) -> None:
    match = ToneMatch.fit(_noise(1.0, 8), _lowpass(_noise(1.0, 9), 2000, 1)[None], SR)
    audio = _noise(samples / SR, 10)[None]
    assert match.apply(audio).shape == audio.shape


def test_by_default_it_only_cuts() -> None:
    reference = _lowpass(_noise(2.0, 13), 2000, 2)
    gains = ToneMatch.fit(reference, _noise(2.0, 14)[None], SR).gains_db[0]
    kept = gains.max()  # the shift that keeps the power: every band at or below it
    low, high = band_centres(SR) < 500, band_centres(SR) > 12000
    assert torch.allclose(gains[low], kept.expand(int(low.sum())), atol=0.5)
    assert torch.allclose(gains[high], kept - 24.0, atol=1e-3)  # cut to the limit
