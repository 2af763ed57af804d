"""Spectrogram images of audio, for TensorBoard demos and run reports."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from jbdiff.core.atomic import atomic_path


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


def save_spectrogram_png(audio_path: str | os.PathLike[str], png_path: str | os.PathLike[str], *, width: int = 1200, n_fft: int = 1024) -> Path:
    """Write a spectrogram PNG of an audio file (channels mixed), reading it in pieces.

    At most ``width`` columns, each one ``n_fft``-sample frame read by seeking, so memory does
    not grow with the file's length. Written atomically; returns ``png_path``.
    """
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    window = torch.hann_window(n_fft)
    columns = []
    with sf.SoundFile(audio_path) as handle:
        count = max(1, min(width, handle.frames // (n_fft // 4)))
        for start in np.linspace(0, max(0, handle.frames - n_fft), count).astype(int):
            handle.seek(int(start))
            frame = torch.from_numpy(handle.read(n_fft, dtype="float32", always_2d=True).mean(axis=1))
            frame = torch.nn.functional.pad(frame, (0, n_fft - frame.shape[0]))
            columns.append(torch.fft.rfft(frame * window).abs())
    spec = torch.stack(columns, dim=1)
    decibels = 20 * torch.log10(spec / spec.max().clamp_min(1e-8) + 1e-8)
    image = decibels.clamp(-80, 0).flip(0).numpy()
    target = Path(png_path)
    with atomic_path(target) as tmp:
        pyplot.imsave(tmp, image, cmap="magma", vmin=-80, vmax=0, format="png")
    return target
