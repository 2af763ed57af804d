"""Spectrogram images: range, orientation, stacking, short clips."""

from __future__ import annotations

import math

import torch

from jbdiff.core.spectrogram import spectrogram_image


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
