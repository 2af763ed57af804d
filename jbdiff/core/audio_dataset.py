"""Training data from a folder of audio files: scanning, an endless stream of random crops, fixed held-out crops."""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import IterableDataset

from jbdiff.core.audio import (
    SAMPLE_RATE,
    AudioError,
    AudioInfo,
    audio_info,
    list_audio_files,
    load_audio,
)
from jbdiff.core.data_seeding import stream_rng
from jbdiff.core.errors import JbdiffError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class AudioFolder:
    """The readable audio files of a folder, and those skipped with the reason."""

    root: Path
    files: list[AudioInfo]
    skipped: list[tuple[Path, str]] = field(default_factory=list)

    @property
    def seconds(self) -> float:
        return sum(info.duration for info in self.files)


def scan_audio_folder(folder: str | os.PathLike[str]) -> AudioFolder:
    """List every readable audio file under ``folder`` (recursively).

    Unreadable files are skipped and logged; a folder with no readable audio is an error.
    """
    root = Path(folder)
    files, skipped = [], []
    for path in list_audio_files(root):
        try:
            files.append(audio_info(path))
        except AudioError as err:
            skipped.append((path, str(err)))
    for path, reason in skipped:
        logger.warning("skipping %s", reason)
    if not files:
        extra = f" ({len(skipped)} unreadable file(s) skipped)" if skipped else ""
        raise JbdiffError(f"{root}: no readable audio files found{extra}")
    return AudioFolder(root, files, skipped)


def crop_samples(seconds: float, multiple: int, *, minimum: int = 0, round_up: bool = False) -> int:
    """Samples in a training crop of ``seconds`` at the model rate: a whole number of ``multiple``
    (rounded down, or up with ``round_up``), at least one ``multiple`` and at least ``minimum``."""
    samples = round(seconds * SAMPLE_RATE, 6)
    count = math.ceil(samples / multiple) if round_up else int(samples) // multiple
    return max(minimum, multiple, count * multiple)


def spread_over(spans: Sequence[float], count: int) -> list[tuple[int, float]]:
    """``count`` positions evenly spaced over ``spans`` laid end to end: (span index, offset into it).

    Position k sits at (k + 0.5) / count of the whole, so the same spans always give the same
    positions (held-out validation data); a span of zero length is never picked.
    """
    total = sum(spans)
    positions = []
    for k in range(count):
        index, offset = 0, (k + 0.5) * total / count
        while index < len(spans) - 1 and offset >= spans[index]:
            offset -= spans[index]
            index += 1
        positions.append((index, offset))
    return positions


def fixed_crops(folder: AudioFolder, length: int, count: int, channels: int = 1) -> torch.Tensor:
    """``count`` crops (count, channels, length) evenly spaced over all of ``folder``'s audio.

    The same folder always gives the same crops (held-out validation data). Files shorter
    than a crop take turns, each zero-padded at the end, when no file is longer.
    """
    seconds = length / SAMPLE_RATE
    spans = [max(0.0, info.duration - seconds) for info in folder.files]
    places = spread_over(spans, count) if sum(spans) > 0 else [(k % len(spans), 0.0) for k in range(count)]
    out = np.zeros((count, channels, length), dtype=np.float32)
    for k, (index, position) in enumerate(places):
        audio = load_audio(folder.files[index].path, channels=channels, offset=position, duration=seconds)
        n = min(length, audio.shape[-1])
        out[k, :, :n] = audio[:, :n]
    return torch.from_numpy(out)


class RandomCrops(IterableDataset):  # type: ignore[type-arg]
    """Endless random crops of ``length`` samples, files picked in proportion to duration.

    Each crop is read with seeking (no whole-file decode). Files shorter than a crop are
    zero-padded at the end. The stream is seeded from ``seed``, the distributed rank, the
    dataloader worker and ``stream`` (pass the resume step so a resumed run sees new crops).
    """

    def __init__(self, folder: AudioFolder, length: int, channels: int = 1, seed: int = 0, stream: int = 0) -> None:
        super().__init__()
        self.files = folder.files
        self.length, self.channels = length, channels
        self.seed, self.stream = seed, stream
        durations = np.array([info.duration for info in self.files])
        self.weights = durations / durations.sum()

    def crop(self, rng: np.random.Generator) -> torch.Tensor:
        """One random crop (channels, length)."""
        info = self.files[rng.choice(len(self.files), p=self.weights)]
        seconds = self.length / SAMPLE_RATE
        start = rng.uniform(0.0, max(0.0, info.duration - seconds))
        audio = load_audio(info.path, channels=self.channels, offset=start, duration=seconds)
        out = np.zeros((self.channels, self.length), dtype=np.float32)
        n = min(self.length, audio.shape[-1])
        out[:, :n] = audio[:, :n]
        return torch.from_numpy(out)

    def __iter__(self):  # type: ignore[no-untyped-def]
        rng = stream_rng(self.seed, self.stream)
        while True:
            yield self.crop(rng)
