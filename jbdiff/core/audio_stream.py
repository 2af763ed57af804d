"""Long audio files in flat memory: read by seeking (:class:`AudioStreamReader`), written piece by
piece, atomically (:class:`AudioStreamWriter`).

Pieces go to a float32 WAV beside the target while the peak is tracked. On success a ``.wav``
target simply takes that file's place; a ``.flac`` or ``.ogg`` target is transcoded from it
block by block, scaled down as a whole when the peak is above 1.0 (never clipped), as
:func:`jbdiff.core.audio.save_audio` does. On any error or interruption nothing is left behind:
neither the target nor a temporary file.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

import numpy as np
import soundfile as sf

from jbdiff.core.atomic import atomic_path, staging_file
from jbdiff.core.audio import (
    SAMPLE_RATE,
    AudioError,
    audio_info,
    peak_scale,
    resample,
    save_format,
    to_mono,
)

if TYPE_CHECKING:
    from typing import Self


_BLOCK = 1 << 18  # samples per block when transcoding


class AudioStreamReader:
    """Mono audio of a file at the model's rate, read a block at a time by seeking.

    ``read(start, stop)`` returns samples ``[start, stop)`` of the file as it would be after
    mixing to mono and resampling it whole (soxr VHQ): each block is read with a margin and
    resampled on the same sample grid, so memory does not grow with the file's length.
    """

    _MARGIN = 0.05  # seconds read on each side of a block, beyond the resampling filter's reach

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        info = audio_info(self.path)
        self.rate = info.sample_rate
        self.frames = info.frames
        grid = math.gcd(self.rate, SAMPLE_RATE)
        self._step_in, self._step_out = self.rate // grid, SAMPLE_RATE // grid
        self.length = int(self.frames * SAMPLE_RATE / self.rate + 0.5)
        """Samples at the model's rate."""

    def read(self, start: int, stop: int) -> np.ndarray:
        """(1, stop - start) float32 mono samples at the model's rate; zeros past the end."""
        start, stop = max(0, start), max(start, stop)
        if self.rate == SAMPLE_RATE:
            first, last, offset = start, min(stop, self.frames), start
        else:
            margin = math.ceil(self._MARGIN * self.rate)
            first = max(0, math.floor(start * self.rate / SAMPLE_RATE) - margin) // self._step_in * self._step_in
            last = min(self.frames, math.ceil(stop * self.rate / SAMPLE_RATE) + margin)
            offset = first // self._step_in * self._step_out
        block = np.zeros((1, stop - start), dtype=np.float32)
        if last <= first:
            return block
        try:
            with sf.SoundFile(self.path) as handle:
                if handle.seekable():
                    handle.seek(first)
                    data = handle.read(last - first, dtype="float32", always_2d=True)
                else:  # decode from the beginning and drop what precedes the block
                    data = handle.read(last, dtype="float32", always_2d=True)[first:]
        except (sf.SoundFileError, OSError) as error:
            raise AudioError(f"{self.path}: the audio data cannot be read ({error})") from error
        if not np.isfinite(data).all():
            raise AudioError(f"{self.path}: contains NaN or infinite samples")
        mono = resample(to_mono(np.ascontiguousarray(data.T)), self.rate)
        piece = mono[:, start - offset : stop - offset]
        block[:, : piece.shape[-1]] = piece
        return block


class AudioStreamWriter:
    """Context manager: ``with AudioStreamWriter(path, channels) as out: out.write(piece)``."""

    def __init__(self, path: str | os.PathLike[str], channels: int, sample_rate: int) -> None:
        self.path = Path(path)
        self.format, self.subtype, self.unbounded = save_format(self.path)
        self.channels, self.sample_rate = channels, sample_rate
        self.peak, self.frames = 0.0, 0

    def __enter__(self) -> Self:
        self._staging = staging_file(self.path, ".part.wav")
        self._file = sf.SoundFile(self._staging, "w", self.sample_rate, self.channels, "FLOAT", format="WAV")
        return self

    def write(self, piece: np.ndarray) -> None:
        """Append float audio shaped (channels, samples)."""
        if piece.ndim != 2 or piece.shape[0] != self.channels:
            raise ValueError(f"expected a piece shaped ({self.channels}, samples), got {piece.shape}")
        if not np.isfinite(piece).all():
            raise AudioError(f"{self.path}: the generated audio contains NaN or infinite samples")
        if piece.shape[1]:
            self.peak = max(self.peak, float(np.abs(piece).max()))
        self._file.write(np.ascontiguousarray(piece.T, dtype=np.float32))
        self.frames += piece.shape[1]

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        self._file.close()
        try:
            if kind is None:
                self._finish()
        finally:
            self._staging.unlink(missing_ok=True)

    def _finish(self) -> None:
        if self.frames == 0:
            raise AudioError(f"{self.path}: there is no audio to save (zero length)")
        scale = peak_scale(self.path, self.peak, self.unbounded)
        with atomic_path(self.path) as tmp:
            if self.format == "WAV":
                os.replace(self._staging, tmp)
                return
            with sf.SoundFile(self._staging) as source, sf.SoundFile(
                tmp, "w", self.sample_rate, self.channels, self.subtype, format=self.format
            ) as target:
                for block in source.blocks(blocksize=_BLOCK, dtype="float32", always_2d=True):
                    target.write(block * np.float32(scale))
