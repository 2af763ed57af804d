"""Spectrogram images: range, orientation, stacking, short clips; the readable PNG and its mel columns."""

from __future__ import annotations

import math
import tracemalloc
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from jbdiff.core.spectrogram import (
    Marks,
    mel_decibels,
    save_spectrogram_png,
    spectrogram_image,
)


def test_a_tone_is_one_bright_row_near_the_bottom() -> None:
    t = torch.arange(44100) / 44100
    image = spectrogram_image(torch.sin(2 * math.pi * 440 * t))
    assert image.shape[0] == 1 and image.min() >= 0 and image.max() == 1
    brightest_row = int(image[0].mean(1).argmax())
    bins = image.shape[1]
    assert bins - 1 - brightest_row == round(440 / (44100 / 1024))  # row counted from the bottom


def test_channels_stack_and_short_clips_fit() -> None:
    stereo = torch.randn(2, 8000)
    assert spectrogram_image(stereo).shape[1] == 2 * 513
    short = spectrogram_image(torch.randn(300))
    assert short.shape[1] == 129  # n_fft shrinks to 256 for a 300-sample clip


def test_the_mel_image_puts_a_tone_in_its_band_and_reads_a_long_file_in_pieces(tmp_path: Path) -> None:
    import librosa

    rate, minutes = 8000, 20
    path = tmp_path / "long.wav"
    t = np.arange(rate * 60) / rate
    minute = (0.5 * np.sin(2 * np.pi * 1000 * t) * 32767).astype(np.int16)
    with sf.SoundFile(path, "w", rate, 1, "PCM_16") as handle:
        for _ in range(minutes):
            handle.write(minute)
    mel_decibels(path, width=2, n_mels=64)  # the first call imports librosa's filters
    tracemalloc.start()
    decibels, read_rate, frames = mel_decibels(path, width=400, n_mels=64)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 4e6, f"{peak / 1e6:.1f} MB traced; the decoded file is {frames * 4 / 1e6:.0f} MB"  # read by seeking
    assert decibels.shape == (64, 400) and read_rate == rate and frames == rate * 60 * minutes
    centres = librosa.mel_frequencies(64 + 2, fmin=20.0, fmax=rate / 2)[1:-1]
    assert abs(centres[int(decibels.mean(axis=1).argmax())] - 1000) < 60


def test_the_png_has_axes_and_marks(tmp_path: Path) -> None:
    path = tmp_path / "clip.wav"
    sf.write(path, np.random.default_rng(0).normal(0, 0.1, (44100 * 3, 2)).astype(np.float32), 44100)
    png = save_spectrogram_png(path, tmp_path / "clip.png", Marks(seams=[1.5, 2.5], seed_end=1.0, regions=[(2.0, 2.4)]))
    from matplotlib import image

    assert image.imread(png).shape[:2] == (360, 1000)
    assert set(tmp_path.iterdir()) == {path, png}  # written atomically: no staging file left
