"""Writing a long audio file piece by piece, atomically, in flat memory.

Pieces go to a float32 WAV beside the target while the peak is tracked. On success a ``.wav``
target simply takes that file's place; a ``.flac`` or ``.ogg`` target is transcoded from it
block by block, scaled down as a whole when the peak is above 1.0 (never clipped), as
:func:`jbdiff.core.audio.save_audio` does. On any error or interruption nothing is left behind:
neither the target nor a temporary file.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

import numpy as np
import soundfile as sf

from jbdiff.core.atomic import atomic_path, staging_file
from jbdiff.core.audio import AudioError, peak_scale, save_format

if TYPE_CHECKING:
    from typing import Self


_BLOCK = 1 << 18  # samples per block when transcoding


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
