"""Reconstruction and codebook metrics for ``jbdiff eval codec``.

Follows the codec-evaluation protocol of Stable Audio 2 (Evans et al., 2024, Table 5):
auraloss losses with their default parameters. Audio tensors are shaped
``(channels, samples)`` or ``(batch, channels, samples)``; values are averaged over
batch and channels.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import torch
from auraloss.freq import MelSTFTLoss, MultiResolutionSTFTLoss
from auraloss.time import SISDRLoss

__all__ = [
    "ReconstructionMetrics",
    "codebook_perplexity",
    "codebook_usage",
    "histogram_perplexity",
    "histogram_usage",
    "mel_distance",
    "reconstruction_metrics",
    "si_sdr",
    "stft_distance",
]


@functools.lru_cache(maxsize=1)
def _stft_loss() -> MultiResolutionSTFTLoss:
    return MultiResolutionSTFTLoss()


@functools.lru_cache(maxsize=8)
def _mel_loss(sample_rate: int) -> MelSTFTLoss:
    return MelSTFTLoss(sample_rate)


@functools.lru_cache(maxsize=1)
def _sisdr_loss() -> SISDRLoss:
    return SISDRLoss()


def _prepare(
    reference: torch.Tensor, estimate: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Check shapes and return contiguous float32 ``(batch, channels, samples)`` tensors."""
    if reference.shape != estimate.shape:
        raise ValueError(
            f"reference and estimate must have the same shape, got reference "
            f"{tuple(reference.shape)} and estimate {tuple(estimate.shape)}"
        )
    if reference.dim() not in (2, 3):
        raise ValueError(
            f"expected audio shaped (channels, samples) or (batch, channels, samples), got "
            f"reference {tuple(reference.shape)} and estimate {tuple(estimate.shape)}"
        )
    if reference.dim() == 2:
        reference, estimate = reference.unsqueeze(0), estimate.unsqueeze(0)
    return (
        reference.detach().to(torch.float32).contiguous(),
        estimate.detach().to(torch.float32).contiguous(),
    )


@torch.no_grad()
def stft_distance(reference: torch.Tensor, estimate: torch.Tensor) -> float:
    """Multi-resolution STFT distance (lower is better).

    ``auraloss.freq.MultiResolutionSTFTLoss()`` with its defaults: FFT sizes
    (1024, 2048, 512), hops (120, 240, 50), windows (600, 1200, 240), Hann window,
    spectral convergence + L1 log-magnitude terms, averaged over resolutions.
    """
    reference, estimate = _prepare(reference, estimate)
    return _stft_loss()(estimate, reference).item()


@torch.no_grad()
def mel_distance(
    reference: torch.Tensor, estimate: torch.Tensor, sample_rate: int
) -> float:
    """Mel-STFT distance (lower is better).

    ``auraloss.freq.MelSTFTLoss(sample_rate)`` with auraloss 0.4.0 defaults: FFT size
    1024, hop 256, Hann window of 1024, 128 mel bins (librosa filterbank, 0 Hz to
    Nyquist), spectral convergence + L1 log-magnitude terms, eps 1e-8.
    """
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be positive, got {sample_rate}")
    reference, estimate = _prepare(reference, estimate)
    return _mel_loss(int(sample_rate))(estimate, reference).item()


@torch.no_grad()
def si_sdr(reference: torch.Tensor, estimate: torch.Tensor) -> float:
    """Scale-invariant SDR in dB (higher is better), via ``auraloss.time.SISDRLoss()``.

    Signals are made zero-mean per channel, then
    ``10 * log10(|a s|^2 / (|e - a s|^2 + eps) + eps)`` with ``a = <e, s> / (|s|^2 + eps)``
    and ``eps = 1e-8``, averaged over batch and channels. The eps terms keep the value
    finite: a perfect estimate gives about ``10 * log10(|s|^2 / eps)`` (over 100 dB for
    ordinary audio) and a silent reference gives ``10 * log10(eps) = -80`` dB, never NaN.
    """
    reference, estimate = _prepare(reference, estimate)
    return -_sisdr_loss()(estimate, reference).item()


def _code_counts(codes: torch.Tensor, bins: int) -> torch.Tensor:
    """Occurrences of each of the ``bins`` codes in ``codes`` (any shape)."""
    if bins <= 0:
        raise ValueError(f"bins must be positive, got {bins}")
    if codes.is_floating_point() or codes.is_complex() or codes.dtype == torch.bool:
        raise ValueError(f"codes must be an integer tensor, got {codes.dtype}")
    if codes.numel() == 0:
        raise ValueError("codes is empty")
    flat = codes.detach().reshape(-1).to(torch.int64)
    low, high = flat.min().item(), flat.max().item()
    if low < 0 or high >= bins:
        raise ValueError(
            f"codes must lie in [0, {bins}), got values in [{low}, {high}]"
        )
    return torch.bincount(flat, minlength=bins)


def histogram_usage(counts: torch.Tensor) -> float:
    """Fraction of the codebook entries that a code histogram (one count per entry) holds."""
    return (counts > 0).sum().item() / counts.numel()


def histogram_perplexity(counts: torch.Tensor) -> float:
    """``exp(entropy)`` (natural log) of a code histogram, in ``[1, entries]``."""
    probs = counts[counts > 0].to(torch.float64) / counts.sum()
    return math.exp(-(probs * probs.log()).sum().item())


def codebook_usage(codes: torch.Tensor, bins: int) -> float:
    """Fraction of the ``bins`` codebook entries that appear at least once in ``codes``."""
    return histogram_usage(_code_counts(codes, bins))


def codebook_perplexity(codes: torch.Tensor, bins: int) -> float:
    """``exp(entropy)`` (natural log) of the empirical code distribution, in ``[1, bins]``."""
    return histogram_perplexity(_code_counts(codes, bins))


@dataclasses.dataclass(frozen=True)
class ReconstructionMetrics:
    """Codec reconstruction metrics: STFT and mel distances (lower is better), SI-SDR in dB."""

    stft: float
    mel: float
    si_sdr: float

    def as_dict(self) -> dict[str, float]:
        """Return the metrics as a ``{name: value}`` dict."""
        return dataclasses.asdict(self)


def reconstruction_metrics(
    reference: torch.Tensor, estimate: torch.Tensor, sample_rate: int
) -> ReconstructionMetrics:
    """Compute :func:`stft_distance`, :func:`mel_distance` and :func:`si_sdr` together."""
    return ReconstructionMetrics(
        stft=stft_distance(reference, estimate),
        mel=mel_distance(reference, estimate, sample_rate),
        si_sdr=si_sdr(reference, estimate),
    )
