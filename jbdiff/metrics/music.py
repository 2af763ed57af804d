"""Offline metrics of generated music: distribution distance, style, key, seams, loudness.

Audio is float ``(samples,)`` or ``(channels, samples)`` and is mixed to mono where a metric
needs one signal. Embeddings and tag probabilities come from :mod:`jbdiff.metrics.musicnn` (any
embedding works for :func:`frechet_distance`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import librosa
import numpy as np
import numpy.typing as npt

from jbdiff.core.audio import mono_signal

__all__ = [
    "CHROMA_RATE",
    "PITCH_CLASSES",
    "SILENCE_DB",
    "Key",
    "chroma_correlation",
    "clipped_fraction",
    "estimate_key",
    "frechet_distance",
    "key_agreement",
    "mean_chroma",
    "rms_db",
    "seam_discontinuity",
    "silent_fraction",
    "spectral_flux",
    "tag_kl",
]

PITCH_CLASSES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")
# Krumhansl & Kessler (1982) key profiles, tonic first.
_MAJOR_PROFILE = np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88])
_MINOR_PROFILE = np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17])
SILENCE_DB = -120.0  # the floor reported for digital silence
CHROMA_RATE = 11025  # chroma is computed at this rate


def _mono(audio: np.ndarray) -> np.ndarray:
    """``audio`` as a float32 ``(samples,)`` signal (channels averaged)."""
    audio = mono_signal(audio)
    if audio.size == 0:
        raise ValueError(f"expected non-empty audio shaped (samples,) or (channels, samples), got {audio.shape}")
    return audio


# --- distribution distance and style -------------------------------------------------------


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to embedding sets ``a`` (n, d) and ``b`` (m, d).

    ``|mu_a - mu_b|^2 + tr(S_a) + tr(S_b) - 2 tr((S_a^1/2 S_b S_a^1/2)^1/2)``. With factors
    ``S = F^T F`` (``F`` the R of a QR decomposition of the centred samples), the last trace is
    the sum of the singular values of ``F_a F_b^T``: no matrix square root, exact for the
    singular covariances of fewer samples than dimensions. A set of one sample has zero
    covariance.
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or not len(a) or not len(b):
        raise ValueError(f"expected two non-empty sets shaped (n, d) with the same d, got {a.shape} and {b.shape}")

    def factor(x: np.ndarray) -> np.ndarray:
        return np.linalg.qr((x - x.mean(axis=0)) / np.sqrt(max(len(x) - 1, 1))).R

    factor_a, factor_b = factor(a), factor(b)
    cross = np.linalg.svd(factor_a @ factor_b.T, compute_uv=False).sum()
    diff = a.mean(axis=0) - b.mean(axis=0)
    return max(0.0, float(diff @ diff + np.sum(factor_a**2) + np.sum(factor_b**2) - 2.0 * cross))


def tag_kl(reference: npt.ArrayLike, candidate: npt.ArrayLike, eps: float = 1e-6) -> float:
    """KL divergence (nats) from ``reference``'s tag distribution to ``candidate``'s.

    Each argument is tag probabilities ``(tags,)`` or per patch ``(patches, tags)``; patches are
    averaged and the tag vector is normalised to sum to one (the clip's distribution over
    tags). 0 when both clips spread over the tags alike.
    """
    p, q = (np.atleast_2d(np.asarray(x, dtype=np.float64)).mean(axis=0) + eps for x in (reference, candidate))
    if p.shape != q.shape:
        raise ValueError(f"tag vectors differ in length: {p.shape[0]} and {q.shape[0]}")
    p, q = p / p.sum(), q / q.sum()
    return float(np.sum(p * np.log(p / q)))


# --- key and pitch classes -------------------------------------------------------------------


def mean_chroma(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """The clip's average constant-Q chroma ``(12,)``, C first (librosa ``chroma_cqt``).

    Computed at 11025 Hz, which keeps every pitch of its seven octaves (C1 to B7) and is fast.
    """
    mono = _mono(audio)
    if sample_rate != CHROMA_RATE:
        mono = librosa.resample(mono, orig_sr=sample_rate, target_sr=CHROMA_RATE, res_type="soxr_hq")
    return librosa.feature.chroma_cqt(y=mono, sr=CHROMA_RATE).mean(axis=1)


def chroma_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two mean-chroma vectors: 1 for the same pitch-class profile.

    0 when either profile is flat (no pitch information, e.g. silence).
    """
    a, b = np.asarray(a, dtype=np.float64) - np.mean(a), np.asarray(b, dtype=np.float64) - np.mean(b)
    norm = np.linalg.norm(a) * np.linalg.norm(b)
    return float(a @ b / norm) if norm > 1e-12 else 0.0


@dataclasses.dataclass(frozen=True)
class Key:
    """A musical key: ``tonic`` pitch class (0 = C) and mode."""

    tonic: int
    minor: bool

    def __str__(self) -> str:
        return f"{PITCH_CLASSES[self.tonic]} {'minor' if self.minor else 'major'}"


def estimate_key(chroma: np.ndarray) -> Key:
    """The key whose Krumhansl-Kessler profile correlates best with a mean chroma ``(12,)``."""
    scores = [
        (chroma_correlation(chroma, np.roll(profile, tonic)), Key(tonic, minor))
        for minor, profile in ((False, _MAJOR_PROFILE), (True, _MINOR_PROFILE))
        for tonic in range(12)
    ]
    return max(scores, key=lambda score: score[0])[1]


def key_agreement(a: Key, b: Key) -> float:
    """MIREX key score between two keys, symmetric: same 1, a fifth apart (same mode) 0.5,
    relative major/minor 0.3, parallel major/minor 0.2, otherwise 0."""
    interval = (b.tonic - a.tonic) % 12
    if a.minor == b.minor:
        return 1.0 if interval == 0 else 0.5 if interval in (5, 7) else 0.0
    relative = 9 if not a.minor else 3  # C major <-> A minor
    return 0.3 if interval == relative else 0.2 if interval == 0 else 0.0


# --- seams -----------------------------------------------------------------------------------


def spectral_flux(audio: np.ndarray, sample_rate: int, n_fft: int = 2048, hop: int = 512, n_mels: int = 64) -> np.ndarray:
    """Mean absolute change (dB) of the log-mel spectrum between consecutive frames.

    Mel power in dB relative to the clip's peak, floored 80 dB below it, so the measure does
    not depend on level. Frame ``t`` is centred on sample ``t * hop``; the first frame's flux is 0.
    """
    mel = librosa.feature.melspectrogram(y=_mono(audio), sr=sample_rate, n_fft=n_fft, hop_length=hop, n_mels=n_mels)
    level = librosa.power_to_db(mel, ref=np.max, top_db=80.0)
    return np.concatenate([[0.0], np.abs(np.diff(level, axis=1)).mean(axis=0)])


def seam_discontinuity(
    audio: np.ndarray, sample_rate: int, seams: Sequence[int], n_fft: int = 2048, hop: int = 512
) -> float:
    """How much the spectrum jumps at the sample positions ``seams`` compared with elsewhere.

    The largest spectral flux within one analysis window of each seam, averaged over seams,
    divided by the mean of the same local maximum taken at every frame at least two windows
    from any seam and from the clip's ends: 1 on average for seams at random positions of
    the clip, large for a cut or click. NaN when there is no seam inside the clip or no frame
    far enough from them.
    """
    flux = spectral_flux(audio, sample_rate, n_fft, hop)
    radius = n_fft // hop // 2 + 1
    local = np.lib.stride_tricks.sliding_window_view(np.pad(flux, radius, mode="edge"), 2 * radius + 1).max(axis=1)
    frames = np.arange(len(flux))
    seam_frames = [round(s / hop) for s in seams if 0 < s < np.shape(audio)[-1]]
    if not seam_frames:
        return float("nan")
    far = (frames >= 2 * radius) & (frames < len(flux) - 2 * radius)
    for frame in seam_frames:
        far &= np.abs(frames - frame) > 2 * radius
    if not far.any():
        return float("nan")
    typical = max(float(np.mean(local[far])), 1e-8)
    return float(np.mean([local[frame] for frame in seam_frames]) / typical)


# --- loudness and silence --------------------------------------------------------------------


def rms_db(audio: np.ndarray) -> float:
    """RMS level of all samples in dB relative to full scale (floored at -120 dB)."""
    power = float(np.mean(np.square(np.asarray(audio, dtype=np.float64))))
    return max(SILENCE_DB, 10.0 * np.log10(power)) if power > 0 else SILENCE_DB


def silent_fraction(
    audio: np.ndarray, sample_rate: int, threshold_db: float = -60.0, frame_seconds: float = 0.05
) -> float:
    """Fraction of non-overlapping ``frame_seconds`` frames whose RMS is below ``threshold_db`` dBFS."""
    mono = _mono(audio).astype(np.float64)
    frame = max(1, min(len(mono), round(frame_seconds * sample_rate)))
    frames = mono[: len(mono) // frame * frame].reshape(-1, frame)
    power = np.mean(np.square(frames), axis=1)
    return float(np.mean(power < 10.0 ** (threshold_db / 10.0)))


def clipped_fraction(audio: np.ndarray, threshold: float = 0.999) -> float:
    """Fraction of samples (all channels) whose magnitude reaches ``threshold`` of full scale."""
    audio = np.asarray(audio)
    if audio.size == 0:
        raise ValueError("expected non-empty audio")
    return float(np.mean(np.abs(audio) >= threshold))
