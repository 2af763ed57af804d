"""Reading, writing and listing audio files.

Everything goes through libsndfile (via ``soundfile``), so WAV, FLAC, Ogg Vorbis, Opus
and MP3 are read without ffmpeg. Audio in memory is float32 shaped ``(channels, samples)``.

Policies:

* Loading never clips: decoded lossy files often peak slightly above 1.0 and are returned
  as they are. NaN or infinite samples are rejected.
* Channel conversion: ``channels=1`` averages all channels; ``channels=2`` duplicates a
  mono file and keeps the first two channels (front left/right in WAV order) of a file
  with more; ``channels=None`` keeps the file's channels.
* Resampling uses soxr at "VHQ" quality, only when the file's rate differs.
* Saving picks the format from the extension: ``.wav`` is 32-bit float (peaks above 1.0
  survive losslessly), ``.flac`` is 24-bit PCM and ``.ogg`` is Vorbis. Those last two
  cannot hold peaks above 1.0, so such a signal is scaled down as a whole to peak 0.999
  (with a logged warning) rather than hard-clipped, which would add distortion.
* Files are written atomically: a failed save leaves neither a partial file nor a
  temporary one behind.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import soundfile as sf
import soxr

from jbdiff.core.atomic import atomic_path
from jbdiff.core.errors import JbdiffError

if TYPE_CHECKING:
    import torch

SAMPLE_RATE = 44100
"""The one sample rate of every model: audio is resampled to it on the way in."""

logger = logging.getLogger(__name__)

SUPPORTED_EXTENSIONS: frozenset[str] = frozenset({".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3"})
MAX_CHANNELS = 8

# Extension -> (libsndfile format, subtype, holds peaks above 1.0).
_SAVE_FORMATS: dict[str, tuple[str, str, bool]] = {
    ".wav": ("WAV", "FLOAT", True),
    ".flac": ("FLAC", "PCM_24", False),
    ".ogg": ("OGG", "VORBIS", False),
}
SAVE_PEAK = 0.999


class AudioError(JbdiffError):
    """An audio file is missing, unreadable, unsuitable, or cannot be written."""


@dataclass(frozen=True)
class AudioInfo:
    """What the header of an audio file says."""

    path: Path
    sample_rate: int
    channels: int
    frames: int

    @property
    def duration(self) -> float:
        """Length in seconds."""
        return self.frames / self.sample_rate


def _reason(error: Exception) -> str:
    """libsndfile's own explanation of ``error``, without the trailing period."""
    text = error.error_string if isinstance(error, sf.LibsndfileError) else str(error)
    return text.strip().removeprefix("Error : ").rstrip(".") or type(error).__name__


def _open(path: Path) -> sf.SoundFile:
    """Open ``path`` for reading, turning every failure into an AudioError."""
    if not path.exists():
        raise AudioError(f"{path}: no such file")
    if path.is_dir():
        raise AudioError(f"{path}: is a directory, not an audio file")
    if not path.is_file():
        raise AudioError(f"{path}: is not a regular file")
    try:
        return sf.SoundFile(path)
    except sf.SoundFileError as error:
        raise AudioError(f"{path}: not an audio file libsndfile can read ({_reason(error)})") from error


def _check(path: Path, handle: sf.SoundFile) -> AudioInfo:
    """Validate an open file's header and describe it."""
    if not 1 <= handle.channels <= MAX_CHANNELS:
        raise AudioError(f"{path}: has {handle.channels} channels but at most {MAX_CHANNELS} are supported")
    if handle.frames <= 0:
        raise AudioError(f"{path}: contains no audio (zero length)")
    return AudioInfo(path=path, sample_rate=handle.samplerate, channels=handle.channels, frames=handle.frames)


def audio_info(path: str | os.PathLike[str]) -> AudioInfo:
    """Read and validate an audio file's header without decoding the audio."""
    path = Path(path)
    with _open(path) as handle:
        return _check(path, handle)


def to_mono(audio: np.ndarray) -> np.ndarray:
    """Average the channels of ``(channels, samples)`` audio into ``(1, samples)``."""
    if audio.ndim != 2:
        raise ValueError(f"expected audio shaped (channels, samples), got shape {audio.shape}")
    return audio.mean(axis=0, keepdims=True).astype(audio.dtype, copy=False)


def mono_signal(audio: np.ndarray) -> np.ndarray:
    """``(samples,)`` float32 from ``(samples,)`` or ``(channels, samples)`` audio (channels averaged)."""
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim == 2:
        return to_mono(audio)[0]
    if audio.ndim != 1:
        raise ValueError(f"expected audio shaped (samples,) or (channels, samples), got shape {audio.shape}")
    return audio


def resample(audio: np.ndarray, sample_rate: int, target_rate: int = SAMPLE_RATE) -> np.ndarray:
    """``(channels, samples)`` float audio from ``sample_rate`` to ``target_rate`` (soxr "VHQ"); as is when equal."""
    if sample_rate == target_rate:
        return audio
    return soxr.resample(np.ascontiguousarray(audio.T), sample_rate, target_rate, quality="VHQ").T


def load_audio(
    path: str | os.PathLike[str],
    *,
    sample_rate: int = SAMPLE_RATE,
    channels: int | None = 1,
    offset: float = 0.0,
    duration: float | None = None,
    min_duration: float = 0.0,
) -> np.ndarray:
    """Load audio as float32 ``(channels, samples)`` at ``sample_rate``.

    ``offset`` and ``duration`` (seconds) select a segment, which is read by seeking so a
    long file is not decoded in full. ``channels`` is 1 (mono mix), 2 (stereo) or None
    (as in the file). Raises AudioError if the segment read is shorter than
    ``min_duration`` seconds.
    """
    if channels not in (None, 1, 2):
        raise ValueError(f"channels must be 1, 2 or None, got {channels!r}")
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be positive, got {sample_rate}")
    if offset < 0:
        raise ValueError(f"offset must not be negative, got {offset}")
    if duration is not None and duration <= 0:
        raise ValueError(f"duration must be positive, got {duration}")
    path = Path(path)
    with _open(path) as handle:
        info = _check(path, handle)
        start = round(offset * info.sample_rate)
        if start >= info.frames:
            raise AudioError(
                f"{path}: offset {offset:.2f} s is past the end of the audio, which is {info.duration:.2f} s long"
            )
        stop = info.frames if duration is None else min(info.frames, start + round(duration * info.sample_rate))
        try:
            if handle.seekable():
                handle.seek(start)
                data = handle.read(stop - start, dtype="float32", always_2d=True)
            else:
                # This file cannot seek: decode from the beginning and drop what precedes the offset.
                data = handle.read(stop, dtype="float32", always_2d=True)[start:]
        except sf.SoundFileError as error:
            raise AudioError(f"{path}: the audio data cannot be decoded ({_reason(error)})") from error

    if data.shape[0] == 0:
        raise AudioError(f"{path}: no audio could be read at offset {offset:.2f} s")
    read_seconds = data.shape[0] / info.sample_rate
    if read_seconds < min_duration:
        raise AudioError(
            f"{path}: the audio read is {read_seconds:.2f} s long but at least {min_duration:.2f} s is needed"
        )
    if not np.isfinite(data).all():
        raise AudioError(f"{path}: contains NaN or infinite samples")

    audio = data.T
    if channels == 1:
        audio = to_mono(audio)
    elif channels == 2:
        audio = np.repeat(audio, 2, axis=0) if audio.shape[0] == 1 else audio[:2]
    return np.ascontiguousarray(resample(audio, info.sample_rate, sample_rate), dtype=np.float32)


def peak_scale(path: str | os.PathLike[str], peak: float, unbounded: bool) -> float:
    """The factor that brings audio peaking at ``peak`` within a bounded format (1 when it fits)."""
    if unbounded or peak <= 1.0:
        return 1.0
    logger.warning("%s: audio peaks at %.3f, above 1.0; scaling it down to peak %.3f", path, peak, SAVE_PEAK)
    return SAVE_PEAK / peak


def loudness_gain(audio: torch.Tensor, target_rms: float, max_db: float = 12.0, peak: float = SAVE_PEAK) -> torch.Tensor:
    """Per-take factors (batch, 1, 1) that bring (batch, channels, samples) audio to RMS ``target_rms``.

    Each factor stays within ``max_db`` decibels of 1 and never lifts the take's peak above ``peak``.
    """
    flat = audio.detach().float().flatten(1)
    rms = flat.square().mean(1).sqrt().clamp_min(1e-8)
    limit = 10.0 ** (max_db / 20.0)
    gain = (target_rms / rms).clamp(1.0 / limit, limit)
    gain = gain.minimum(peak / flat.abs().amax(1).clamp_min(1e-8))
    return gain.to(audio.dtype)[:, None, None]


def save_format(path: str | os.PathLike[str]) -> tuple[str, str, bool]:
    """(libsndfile format, subtype, holds peaks above 1.0) for saving to ``path``.

    Raises AudioError for an unsupported extension or a missing folder.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in _SAVE_FORMATS:
        supported = ", ".join(sorted(_SAVE_FORMATS))
        raise AudioError(f"{path}: cannot save '{path.suffix}' files; use one of {supported}")
    if not path.parent.is_dir():
        raise AudioError(f"{path}: the folder {path.parent} does not exist")
    return _SAVE_FORMATS[suffix]


def save_audio(
    path: str | os.PathLike[str],
    audio: np.ndarray | torch.Tensor,
    sample_rate: int = SAMPLE_RATE,
) -> Path:
    """Write ``(channels, samples)`` or ``(samples,)`` float audio atomically; return the path.

    The format follows the extension (.wav float32, .flac 24-bit, .ogg Vorbis). For FLAC
    and Vorbis a signal peaking above 1.0 is scaled down as a whole to peak 0.999.
    """
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be positive, got {sample_rate}")
    path = Path(path)
    file_format, subtype, unbounded = save_format(path)

    if not isinstance(audio, np.ndarray):
        audio = audio.detach().cpu().float().numpy()
    if not np.issubdtype(audio.dtype, np.floating):
        raise ValueError(f"expected float audio, got dtype {audio.dtype}")
    if audio.ndim == 1:
        audio = audio[np.newaxis]
    if audio.ndim != 2 or not 1 <= audio.shape[0] <= MAX_CHANNELS:
        raise ValueError(
            f"expected audio shaped (channels, samples) with 1 to {MAX_CHANNELS} channels, got shape {audio.shape}"
        )
    if audio.shape[1] == 0:
        raise AudioError(f"{path}: there is no audio to save (zero length)")
    if not np.isfinite(audio).all():
        raise AudioError(f"{path}: the audio to save contains NaN or infinite samples")

    audio = audio.astype(np.float32, copy=False)
    scale = peak_scale(path, float(np.abs(audio).max()), unbounded)
    if scale != 1.0:
        audio = audio * np.float32(scale)

    try:
        with atomic_path(path) as tmp:
            sf.write(tmp, audio.T, sample_rate, format=file_format, subtype=subtype)
    except (sf.SoundFileError, OSError) as error:
        raise AudioError(f"{path}: the file cannot be written ({_reason(error)})") from error
    return path


def list_audio_files(folder: str | os.PathLike[str]) -> list[Path]:
    """Audio files (by extension) under ``folder``, recursively and sorted; hidden entries are skipped."""
    folder = Path(folder)
    if not folder.exists():
        raise AudioError(f"{folder}: no such folder")
    if not folder.is_dir():
        raise AudioError(f"{folder}: is not a folder")
    found: list[Path] = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = [name for name in dirs if not name.startswith(".")]
        for name in files:
            candidate = Path(root, name)
            if (
                not name.startswith(".")
                and candidate.suffix.lower() in SUPPORTED_EXTENSIONS
                and candidate.is_file()
            ):
                found.append(candidate)
    return sorted(found)
