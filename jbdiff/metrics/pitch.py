"""Notes, pitch classes and tonalness of audio: does it hold harmonic structure?

Transcription runs the note network of Spotify's basic-pitch (Bittner et al., ICASSP 2022;
Apache-2.0), the ``saved_models/icassp_2022/nmp.onnx`` file that the ``basic-pitch`` package
ships, with onnxruntime (install ``onnxruntime`` and ``basic-pitch --no-deps``; the package is
only located, never imported). The framing is basic-pitch's: mono audio at 22050 Hz, zero-padded
by half the overlap in front, cut into windows of 43844 samples that overlap by 30 frames of
256 samples; each window gives note and onset posteriorgrams over the 88 piano keys (MIDI 21 to
108) at 86 frames per second, and the overlapping frames (15 at each end) are dropped before the
windows are joined.

Notes start at onset peaks at least 0.5 high and last while the note posterior stays at least
0.3, tolerating dips of up to 11 frames; notes of 11 frames (128 ms) or fewer are dropped
(basic-pitch's default thresholds). The pitch-class profile sums the note posterior wherever it
is at least 0.3, folded to 12 pitch classes, so held notes count even without an onset in the
clip. Tonalness needs no model: the share of spectral energy in narrow peaks (partials) that
stand at least 10 dB above the local spectral median.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import os
from pathlib import Path
from typing import Any

import numpy as np
from scipy.ndimage import median_filter

from jbdiff.core.audio import mono_signal, resample
from jbdiff.core.errors import JbdiffError

__all__ = [
    "FRAME_RATE",
    "MODEL_RATE",
    "Note",
    "PitchModelMissing",
    "Transcription",
    "model_path",
    "pitch_class_agreement",
    "posteriorgrams",
    "tonalness",
    "top_pitch_classes",
    "transcribe",
]

# basic-pitch's constants (basic_pitch/constants.py, inference.py, note_creation.py)
MODEL_RATE = 22050
HOP = 256
FRAME_RATE = MODEL_RATE // HOP  # 86 annotation frames per second
WINDOW = MODEL_RATE * 2 - HOP  # 43844 samples in
WINDOW_FRAMES = FRAME_RATE * 2  # 172 frames out
OVERLAP_FRAMES = 30
LOWEST_MIDI = 21
KEYS = 88
_MODEL_FILE = ("saved_models", "icassp_2022", "nmp.onnx")
_INPUT, _NOTE, _ONSET = "serving_default_input_2:0", "StatefulPartitionedCall:1", "StatefulPartitionedCall:2"
_BATCH = 8  # windows per network call

# tonalness: a 4096-point spectrum at 22050 Hz (5.4 Hz bins); a Hann main lobe spans +-2 bins
_TONAL_FFT, _TONAL_HOP, _TONAL_MEDIAN_BINS, _TONAL_LOBE, _TONAL_DB = 4096, 1024, 31, 2, 10.0


class PitchModelMissing(JbdiffError):
    """basic-pitch's ONNX model or onnxruntime is not installed."""


@dataclasses.dataclass(frozen=True)
class Note:
    """A transcribed note: start and end in seconds, MIDI pitch, mean note posterior."""

    start: float
    end: float
    pitch: int
    amplitude: float


@dataclasses.dataclass(frozen=True)
class Transcription:
    """The notes of a clip and its pitch-class profile ``(12,)`` (C first, summing to 1, or all zero)."""

    notes: tuple[Note, ...]
    profile: np.ndarray
    seconds: float

    @property
    def note_density(self) -> float:
        """Notes per second."""
        return len(self.notes) / self.seconds if self.seconds > 0 else 0.0


def model_path() -> Path:
    """Where the installed basic-pitch package keeps ``nmp.onnx``; refused in one sentence when absent."""
    spec = importlib.util.find_spec("basic_pitch")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    paths = [Path(location).joinpath(*_MODEL_FILE) for location in locations]
    found = [path for path in paths if path.is_file()]
    if importlib.util.find_spec("onnxruntime") is None or not found:
        raise PitchModelMissing(
            "note transcription needs basic-pitch's ONNX model and onnxruntime: "
            "pip install onnxruntime && pip install --no-deps basic-pitch==0.4.0"
        )
    return found[0]


@functools.lru_cache(maxsize=1)
def _session(path: str, threads: int) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(path, sess_options=options, providers=["CPUExecutionProvider"])


def _threads() -> int:
    """onnxruntime's thread count: ``OMP_NUM_THREADS`` when it is a number, else its own default (0)."""
    value = os.environ.get("OMP_NUM_THREADS", "")
    return int(value) if value.isdigit() else 0


def _model_input(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """Mono float32 ``(samples,)`` at the model's rate."""
    mono = mono_signal(audio)
    if mono.size == 0:
        raise ValueError("expected non-empty audio")
    return np.ascontiguousarray(resample(mono[None], sample_rate, MODEL_RATE)[0], dtype=np.float32)


def posteriorgrams(audio: np.ndarray, sample_rate: int) -> tuple[np.ndarray, np.ndarray]:
    """The note and onset posteriorgrams ``(frames, 88)`` of ``audio`` (lowest key A0 first)."""
    x = _model_input(audio, sample_rate)
    overlap = OVERLAP_FRAMES * HOP
    hop = WINDOW - overlap
    padded = np.concatenate([np.zeros(overlap // 2, dtype=np.float32), x])
    starts = range(0, len(padded), hop)
    windows = np.zeros((len(starts), WINDOW, 1), dtype=np.float32)
    for row, start in enumerate(starts):
        piece = padded[start : start + WINDOW]
        windows[row, : len(piece), 0] = piece
    session = _session(str(model_path()), _threads())
    notes, onsets = [], []
    for lo in range(0, len(windows), _BATCH):
        note, onset = session.run([_NOTE, _ONSET], {_INPUT: windows[lo : lo + _BATCH]})
        notes.append(note)
        onsets.append(onset)
    frames = int(np.floor(len(x) * FRAME_RATE / MODEL_RATE))
    trim = OVERLAP_FRAMES // 2

    def unwrap(parts: list[np.ndarray]) -> np.ndarray:
        joined = np.concatenate(parts)[:, trim : WINDOW_FRAMES - trim, :]
        return joined.reshape(-1, KEYS)[:frames]

    return unwrap(notes), unwrap(onsets)


def _notes(
    note: np.ndarray, onset: np.ndarray, onset_threshold: float, frame_threshold: float, min_frames: int, tolerance: int = 11
) -> list[Note]:
    """Notes from onset peaks, each held while the note posterior lasts; latest onsets first."""
    frames = note.shape[0]
    if frames < 3:
        return []
    inner = onset[1:-1]
    peak = (inner > onset[:-2]) & (inner > onset[2:]) & (inner >= onset_threshold)
    times, keys = np.nonzero(peak)
    times = times + 1
    order = np.argsort(-times, kind="stable")
    energy = note.copy()
    found = []
    for start, key in zip(times[order], keys[order]):
        end, below = start + 1, 0
        while end < frames - 1 and below < tolerance:
            below = below + 1 if energy[end, key] < frame_threshold else 0
            end += 1
        end -= below
        if end - start <= min_frames:
            continue
        energy[start:end, max(0, key - 1) : key + 2] = 0.0
        found.append(Note(start / FRAME_RATE, end / FRAME_RATE, int(key) + LOWEST_MIDI, float(note[start:end, key].mean())))
    return sorted(found, key=lambda n: (n.start, n.pitch))


def transcribe(
    audio: np.ndarray,
    sample_rate: int,
    *,
    onset_threshold: float = 0.5,
    frame_threshold: float = 0.3,
    min_note_seconds: float = 0.1277,
) -> Transcription:
    """Notes and pitch-class profile of ``audio`` ``(samples,)`` or ``(channels, samples)``."""
    note, onset = posteriorgrams(audio, sample_rate)
    min_frames = round(min_note_seconds * FRAME_RATE)
    notes = _notes(note, onset, onset_threshold, frame_threshold, min_frames)
    active = np.where(note >= frame_threshold, note, 0.0).sum(axis=0)
    profile = np.zeros(12)
    np.add.at(profile, (np.arange(KEYS) + LOWEST_MIDI) % 12, active)
    total = profile.sum()
    seconds = mono_signal(audio).size / sample_rate
    return Transcription(tuple(notes), profile / total if total > 0 else profile, seconds)


def pitch_class_agreement(reference: np.ndarray, candidate: np.ndarray) -> float:
    """Pearson correlation of two pitch-class profiles; 0 when either has no pitch (a flat profile)."""
    a, b = np.asarray(reference, dtype=np.float64), np.asarray(candidate, dtype=np.float64)
    a, b = a - a.mean(), b - b.mean()
    norm = float(np.sqrt((a @ a) * (b @ b)))
    return float(a @ b / norm) if norm > 1e-12 else 0.0


def top_pitch_classes(profile: np.ndarray, share: float = 0.1) -> set[int]:
    """The pitch classes (0 = C) holding at least ``share`` of the profile."""
    return {int(pc) for pc in np.flatnonzero(np.asarray(profile) >= share)}


def tonalness(audio: np.ndarray, sample_rate: int) -> float:
    """Share of spectral energy in partials: narrow peaks 10 dB above the local median spectrum.

    Near 1 for tones and chords, near 0 for white or pink noise; 0 for silence.
    """
    x = _model_input(audio, sample_rate)
    if len(x) < _TONAL_FFT:
        x = np.pad(x, (0, _TONAL_FFT - len(x)))
    frames = np.lib.stride_tricks.sliding_window_view(x, _TONAL_FFT)[::_TONAL_HOP]
    power = np.abs(np.fft.rfft(frames * np.hanning(_TONAL_FFT), axis=-1)) ** 2  # (frames, bins)
    total = float(power.sum())
    if total <= 0:
        return 0.0
    floor = median_filter(power, size=(1, _TONAL_MEDIAN_BINS), mode="nearest")
    local_max = np.zeros_like(power, dtype=bool)
    local_max[:, 1:-1] = (power[:, 1:-1] >= power[:, :-2]) & (power[:, 1:-1] >= power[:, 2:])
    peaks = local_max & (power > floor * 10 ** (_TONAL_DB / 10))
    lobes = np.zeros_like(peaks)
    for shift in range(-_TONAL_LOBE, _TONAL_LOBE + 1):
        lobes |= np.roll(peaks, shift, axis=-1)
    return float(power[lobes].sum() / total)
