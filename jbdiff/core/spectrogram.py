"""Spectrogram images of audio: bare ones for TensorBoard demos, readable PNGs beside every output."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
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


@dataclass(frozen=True)
class Marks:
    """What a spectrogram marks, in seconds: seams between passes, the seed's end, edited regions."""

    seams: Sequence[float] = ()
    seed_end: float | None = None
    regions: Sequence[tuple[float, float]] = ()


def mel_decibels(
    audio_path: str | os.PathLike[str], *, width: int = 1000, n_fft: int = 2048, n_mels: int = 128, fmin: float = 20.0
) -> tuple[np.ndarray, int, int]:
    """(mel bands, columns) dB below the loudest bin (down to -80) of a file, its rate and length.

    Channels are mixed. At most ``width`` columns, each one ``n_fft``-sample frame read by
    seeking, so memory does not grow with the file's length.
    """
    import librosa

    window = torch.hann_window(n_fft)
    columns = []
    with sf.SoundFile(audio_path) as handle:
        rate, frames = handle.samplerate, handle.frames
        filters = torch.from_numpy(librosa.filters.mel(sr=rate, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=rate / 2))
        count = max(1, min(width, frames // (n_fft // 4)))
        for start in np.linspace(0, max(0, frames - n_fft), count).astype(int):
            handle.seek(int(start))
            frame = torch.from_numpy(handle.read(n_fft, dtype="float32", always_2d=True).mean(axis=1))
            frame = torch.nn.functional.pad(frame, (0, n_fft - frame.shape[0]))
            columns.append(filters @ torch.fft.rfft(frame * window).abs().square())
    power = torch.stack(columns, dim=1)
    return (10 * torch.log10(power / power.max().clamp_min(1e-20) + 1e-10)).clamp(-80, 0).numpy(), rate, frames


_HZ_TICKS = (100, 250, 500, 1000, 2000, 4000, 8000, 16000)


def save_spectrogram_png(
    audio_path: str | os.PathLike[str],
    png_path: str | os.PathLike[str],
    marks: Marks | None = None,
    *,
    width: int = 1000,
    n_fft: int = 2048,
    n_mels: int = 128,
    fmin: float = 20.0,
) -> Path:
    """Write a readable spectrogram PNG of an audio file (channels mixed), reading it in pieces.

    A mel (log-frequency) spectrogram with time in seconds, frequency in Hz, a colour bar in dB
    below the loudest bin, and ``marks`` drawn on it (seams dashed, the seed's end solid, edited
    regions between two lines with a bar along the top); read in pieces as :func:`mel_decibels`
    reads. Written atomically; returns ``png_path``.
    """
    import librosa
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    marks = marks or Marks()
    decibels, rate, frames = mel_decibels(audio_path, width=width, n_fft=n_fft, n_mels=n_mels, fmin=fmin)
    duration = frames / rate
    low, high = librosa.hz_to_mel(fmin), librosa.hz_to_mel(rate / 2)
    figure = Figure(figsize=(10, 3.6), dpi=100, layout="constrained")
    axes = figure.add_subplot()
    shown = axes.imshow(
        decibels, origin="lower", aspect="auto", cmap="magma", vmin=-80, vmax=0, extent=(0, duration, low, high),
        interpolation="nearest",
    )
    ticks = [hz for hz in _HZ_TICKS if fmin <= hz <= rate / 2]
    axes.set_yticks([float(librosa.hz_to_mel(hz)) for hz in ticks], [f"{hz // 1000}k" if hz >= 1000 else str(hz) for hz in ticks])
    axes.set_xlabel("time (s)")
    axes.set_ylabel("frequency (Hz)")
    figure.colorbar(shown, ax=axes, label="dB (below the peak)", pad=0.01)
    legend = []
    for start, end in marks.regions:
        axes.axvspan(start, end, ymin=0.96, ymax=1.0, color="#3fd0ff")
        for edge in (start, end):
            axes.axvline(edge, color="#3fd0ff", linewidth=1.5)
    if marks.regions:
        legend.append(Patch(color="#3fd0ff", label="edited region"))
    for seam in marks.seams:
        axes.axvline(seam, color="white", linestyle="--", linewidth=1.0, alpha=0.9)
    if marks.seams:
        legend.append(Line2D([], [], color="white", linestyle="--", label="seam between passes"))
    if marks.seed_end is not None:
        axes.axvline(marks.seed_end, color="#7CFC00", linewidth=2.0)
        legend.append(Line2D([], [], color="#7CFC00", linewidth=2.0, label="end of the seed"))
    if legend:
        axes.legend(handles=legend, loc="upper right", fontsize="small", framealpha=0.6, facecolor="#333333", labelcolor="white")
    target = Path(png_path)
    with atomic_path(target) as tmp:
        figure.savefig(tmp, format="png")
    return target
