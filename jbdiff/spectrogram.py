"""Spectrogram images of audio, for TensorBoard demos and run reports."""

from __future__ import annotations

import torch


def spectrogram_image(audio: torch.Tensor, n_fft: int = 1024) -> torch.Tensor:
    """(1, H, W) image in [0, 1] of ``audio`` (T,) or (C, T): dB below the peak (80 dB range).

    Low frequencies are at the bottom; channels are stacked vertically. Clips shorter than
    ``n_fft`` use the largest power of two that fits.
    """
    audio = audio.detach().float().cpu()
    audio = audio[None] if audio.dim() == 1 else audio
    n_fft = min(n_fft, 1 << (audio.shape[-1].bit_length() - 1))
    window = torch.hann_window(n_fft)
    spec = torch.stft(audio, n_fft, n_fft // 4, window=window, pad_mode="constant", return_complex=True).abs()
    decibels = 20 * torch.log10(spec / spec.max().clamp_min(1e-8) + 1e-8)
    image = decibels.clamp(-80, 0).add(80).div(80).flip(1)
    return image.reshape(1, -1, image.shape[-1])
