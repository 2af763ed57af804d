"""Tone matching: a smooth equaliser that gives audio another recording's long-term spectrum.

A continuation decoded from coarse latents is coloured by the codec (the level-2 codec is 10
to 15 dB weak in the mids and adds noise where the seed is quiet). :meth:`ToneMatch.fit`
compares the two long-term spectra in third-octave bands and keeps, per band, the gain
(within limits; by default cuts only) that closes the gap, shifted so that the total power
does not change: the tone colour moves, the loudness stays (``match_loudness`` sets that).
:meth:`ToneMatch.apply` filters with those gains, interpolated smoothly over log frequency,
at zero phase.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

BANDS_PER_OCTAVE = 3
LOWEST_BAND_HZ = 50.0
_N_FFT = 4096
_PAD = 4096
"""Samples mirrored at each end before filtering, to absorb the filter's spread."""
_SILENT = 1e-6
"""A band of the audio this far below its loudest band (60 dB) holds nothing to lift."""


def band_centres(sample_rate: int) -> torch.Tensor:
    """Third-octave band centres (Hz) from ``LOWEST_BAND_HZ`` up to below the Nyquist frequency."""
    top = math.floor(BANDS_PER_OCTAVE * math.log2(sample_rate / 2 / LOWEST_BAND_HZ) - 0.5)
    return LOWEST_BAND_HZ * 2.0 ** (torch.arange(top + 1, dtype=torch.float64) / BANDS_PER_OCTAVE)


def band_powers(audio: torch.Tensor, sample_rate: int) -> torch.Tensor:
    """Mean power per third-octave band of ``(..., channels, samples)`` audio: ``(..., bands)``.

    Averaged over Hann-windowed frames of 4096 samples and over channels; the lowest band takes
    everything below it and the highest everything above it, as their gains do.
    """
    signal = audio.detach().to(torch.float64)
    if signal.shape[-1] < _N_FFT:
        signal = F.pad(signal, (0, _N_FFT - signal.shape[-1]))
    frames = signal.unfold(-1, _N_FFT, _N_FFT // 2) * torch.hann_window(_N_FFT, dtype=torch.float64)
    power = torch.fft.rfft(frames).abs().square().mean(dim=(-3, -2))
    freqs = torch.fft.rfftfreq(_N_FFT, 1.0 / sample_rate, dtype=torch.float64)
    centres = band_centres(sample_rate)
    half = 2.0 ** (0.5 / BANDS_PER_OCTAVE)
    low, high = centres / half, centres * half
    low[0], high[-1] = 0.0, math.inf
    return power @ ((freqs[:, None] >= low) & (freqs[:, None] < high)).to(power.dtype)


@dataclass(frozen=True)
class ToneMatch:
    """Per-take band gains (dB, ``(batch, bands)``) at ``band_centres(sample_rate)``."""

    gains_db: torch.Tensor
    sample_rate: int

    @classmethod
    def fit(
        cls, reference: torch.Tensor, audio: torch.Tensor, sample_rate: int, max_boost_db: float = 0.0, max_cut_db: float = 24.0
    ) -> ToneMatch:
        """The gains that give ``audio`` (batch, channels, samples) the band spectrum of ``reference``
        (channels, samples), each band lifted by at most ``max_boost_db`` and lowered by at most
        ``max_cut_db``, then all shifted so that the filtered ``audio`` keeps its power. Bands where
        ``audio`` is silent (60 dB below its loudest band) are not lifted, nor is a silent take.
        """
        target, own = band_powers(reference, sample_rate), band_powers(audio, sample_rate)
        target, own = target / target.sum().clamp_min(1e-30), own / own.sum(-1, keepdim=True).clamp_min(1e-30)
        ratio_db = 10.0 * torch.log10(target.clamp_min(1e-30) / own.clamp_min(1e-30))
        silent = own <= _SILENT * own.amax(-1, keepdim=True)
        gains = torch.where(silent, ratio_db.clamp(max=0.0), ratio_db).clamp(-max_cut_db, max_boost_db).float()
        before = audio.detach().float().square().flatten(1).mean(1, keepdim=True)
        after = cls(gains, sample_rate).apply(audio.detach()).float().square().flatten(1).mean(1, keepdim=True)
        kept = 10.0 * torch.log10(after.clamp_min(1e-30) / before.clamp_min(1e-30))
        heard = before > 0  # a silent take keeps 0 dB everywhere
        return cls(torch.where(heard, gains - kept, torch.zeros_like(gains)), sample_rate)

    def response(self, freqs: torch.Tensor) -> torch.Tensor:
        """Amplitude gains ``(batch, len(freqs))``: the band gains interpolated over log frequency."""
        position = torch.log2(freqs.to(torch.float64).clamp_min(LOWEST_BAND_HZ) / LOWEST_BAND_HZ) * BANDS_PER_OCTAVE
        last = self.gains_db.shape[-1] - 1
        below = position.floor().clamp(0, last).long()
        above = (below + 1).clamp(max=last)
        weight = (position - below).clamp(0, 1).to(self.gains_db.dtype)
        gains_db = self.gains_db[:, below] * (1 - weight) + self.gains_db[:, above] * weight
        return 10.0 ** (gains_db / 20.0)

    def apply(self, audio: torch.Tensor) -> torch.Tensor:
        """``audio`` (batch, channels, samples) filtered with each take's gains, at zero phase."""
        samples = audio.shape[-1]
        pad = min(_PAD, samples - 1)
        padded = F.pad(audio.float(), (pad, pad), mode="reflect") if pad > 0 else audio.float()
        length = padded.shape[-1]
        spectrum = torch.fft.rfft(padded)
        gains = self.response(torch.fft.rfftfreq(length, 1.0 / self.sample_rate)).to(spectrum.real.dtype)
        filtered = torch.fft.irfft(spectrum * gains[:, None, :], n=length)
        return filtered[..., pad : pad + samples].to(audio.dtype)
