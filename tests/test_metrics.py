from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from jbdiff.metrics.codec import (
    ReconstructionMetrics,
    codebook_perplexity,
    codebook_usage,
    mel_distance,
    reconstruction_metrics,
    si_sdr,
    stft_distance,
)

SR = 44100


def _tone(channels: int = 2, seconds: float = 1.0, freq: float = 440.0) -> torch.Tensor:
    t = torch.arange(int(SR * seconds), dtype=torch.float64) / SR
    return (
        (0.5 * torch.sin(2 * math.pi * freq * t)).to(torch.float32).repeat(channels, 1)
    )


def _noise(shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    return torch.from_numpy(rng.standard_normal(shape).astype(np.float32))


@pytest.fixture(scope="module")
def tone() -> torch.Tensor:
    return _tone()


def test_identical_signals(tone: torch.Tensor) -> None:
    assert stft_distance(tone, tone) == pytest.approx(0.0, abs=1e-6)
    assert mel_distance(tone, tone, SR) == pytest.approx(0.0, abs=1e-6)
    value = si_sdr(tone, tone)
    assert math.isfinite(value) and value > 100.0


def test_batched_input_matches_unbatched(tone: torch.Tensor) -> None:
    estimate = tone + 0.05 * _noise(tuple(tone.shape))
    assert stft_distance(tone[None], estimate[None]) == pytest.approx(
        stft_distance(tone, estimate)
    )
    assert mel_distance(tone[None], estimate[None], SR) == pytest.approx(
        mel_distance(tone, estimate, SR)
    )
    assert si_sdr(tone[None], estimate[None]) == pytest.approx(si_sdr(tone, estimate))


def test_metrics_monotonic_in_noise_level(tone: torch.Tensor) -> None:
    noise = _noise(tuple(tone.shape), seed=1)
    levels = [0.001, 0.01, 0.1]
    results = [
        reconstruction_metrics(tone, tone + level * noise, SR) for level in levels
    ]
    white = reconstruction_metrics(tone, 0.5 * noise, SR)
    results.append(white)
    for better, worse in itertools.pairwise(results):
        assert better.stft < worse.stft
        assert better.mel < worse.mel
        assert better.si_sdr > worse.si_sdr
    # Log-magnitude terms already penalise faint noise in the tone's empty bins, hence 2x.
    assert white.stft > 2 * results[0].stft
    assert white.mel > 2 * results[0].mel
    assert white.si_sdr < results[0].si_sdr - 40.0


def test_si_sdr_scale_invariant(tone: torch.Tensor) -> None:
    estimate = tone + 0.1 * _noise(tuple(tone.shape), seed=2)
    assert si_sdr(tone, 0.5 * estimate) == pytest.approx(
        si_sdr(tone, estimate), abs=1e-3
    )


def test_si_sdr_matches_closed_form() -> None:
    reference = _tone(channels=2, freq=330.0).numpy().astype(np.float64)
    estimate = 0.8 * reference + 0.05 * _noise(reference.shape, seed=3).numpy().astype(
        np.float64
    )
    expected = []
    for s, s_hat in zip(reference, estimate):
        s, s_hat = s - s.mean(), s_hat - s_hat.mean()
        target = (s_hat @ s) / (s @ s) * s
        error = s_hat - target
        expected.append(10 * np.log10((target @ target) / (error @ error)))
    value = si_sdr(
        torch.from_numpy(reference).float(), torch.from_numpy(estimate).float()
    )
    assert value == pytest.approx(float(np.mean(expected)), abs=1e-3)


def test_si_sdr_silence_is_finite() -> None:
    silence = torch.zeros(2, SR)
    assert si_sdr(silence, silence) == pytest.approx(-80.0, abs=1e-3)
    assert math.isfinite(si_sdr(silence, _noise((2, SR))))
    assert math.isfinite(si_sdr(_tone(), silence))


def test_reconstruction_metrics_as_dict(tone: torch.Tensor) -> None:
    metrics = reconstruction_metrics(tone, tone, SR)
    assert isinstance(metrics, ReconstructionMetrics)
    assert metrics.as_dict() == {
        "stft": metrics.stft,
        "mel": metrics.mel,
        "si_sdr": metrics.si_sdr,
    }


@pytest.mark.parametrize(
    ("reference", "estimate"),
    [((2, 1000), (2, 999)), ((2, 1000), (1, 2, 1000)), ((1000,), (1000,))],
)
def test_bad_shapes_raise(
    reference: tuple[int, ...], estimate: tuple[int, ...]
) -> None:
    ref, est = torch.zeros(reference), torch.zeros(estimate)
    for fn in (stft_distance, si_sdr, lambda r, e: mel_distance(r, e, SR)):
        with pytest.raises(ValueError, match=r"reference .* estimate"):
            fn(ref, est)


def test_shape_mismatch_message_names_both_shapes() -> None:
    with pytest.raises(ValueError, match=r"\(2, 1000\).*\(2, 999\)"):
        reconstruction_metrics(torch.zeros(2, 1000), torch.zeros(2, 999), SR)


@pytest.mark.parametrize("k", [1, 3, 16])
def test_uniform_codes(k: int) -> None:
    bins = 64
    codes = torch.arange(k).repeat(5).reshape(5, k)
    assert codebook_usage(codes, bins) == pytest.approx(k / bins)
    assert codebook_perplexity(codes, bins) == pytest.approx(k)


def test_single_code() -> None:
    codes = torch.full((4, 100), 7)
    assert codebook_usage(codes, 32) == pytest.approx(1 / 32)
    assert codebook_perplexity(codes, 32) == pytest.approx(1.0)


def test_skewed_codes_perplexity() -> None:
    codes = torch.tensor([0, 0, 0, 1])
    expected = math.exp(-(0.75 * math.log(0.75) + 0.25 * math.log(0.25)))
    assert codebook_perplexity(codes, 4) == pytest.approx(expected)
    assert codebook_usage(codes, 4) == pytest.approx(0.5)


@pytest.mark.parametrize(
    ("codes", "bins"),
    [
        (torch.tensor([0, 4]), 4),
        (torch.tensor([-1, 0]), 4),
        (torch.tensor([0.0, 1.0]), 4),
        (torch.tensor([], dtype=torch.long), 4),
        (torch.tensor([0]), 0),
    ],
)
def test_invalid_codes_raise(codes: torch.Tensor, bins: int) -> None:
    with pytest.raises(ValueError):
        codebook_usage(codes, bins)
    with pytest.raises(ValueError):
        codebook_perplexity(codes, bins)
