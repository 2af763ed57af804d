"""musicnn's MagnaTagATune tagger (``MTT_musicnn``) in torch, for offline evaluation.

Pons & Serra, "musicnn: pre-trained convolutional neural networks for music audio tagging"
(2019); weights converted from the ``musicnn`` 0.1.0 package (ISC licence) by
``scripts/convert_musicnn.py`` and shipped in ``jbdiff/metrics/weights/musicnn_mtt.safetensors``.

Input: a log-compressed mel spectrogram, ``log10(1 + 10000 * mel)`` with 96 mel bands of
16 kHz audio (512-point FFT, hop 256), cut into non-overlapping 3-second patches of 187
frames (the trailing remainder is dropped, as musicnn does; a clip shorter than one patch is
repeat-padded, as in its training). Unlike musicnn, the spectrogram stays in float32: its
float16 cast overflows at normal loudness.

Network: a musically motivated front end (timbral convolutions spanning 40 % and 70 % of the
mel bands, temporal convolutions of 128, 64 and 32 frames, each max-pooled over frequency),
a mid end of three densely connected 1-D convolutions, and a back end of temporal max and
mean pooling followed by a 200-unit dense layer (the penultimate embedding) and 50 tag logits.
Batch normalisation uses TensorFlow's epsilon (1e-3) and runs in inference mode.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from pathlib import Path

import librosa
import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn

from jbdiff.core.audio import mono_signal

__all__ = [
    "MTT_TAGS",
    "PATCH_FRAMES",
    "SAMPLE_RATE",
    "WEIGHTS_PATH",
    "MusicnnMTT",
    "MusicnnOutput",
    "analyse",
    "embeddings",
    "load_musicnn",
    "log_mel",
    "patches",
    "tag_probabilities",
]

SAMPLE_RATE = 16000
N_FFT = 512
HOP = 256
N_MELS = 96
PATCH_FRAMES = 187  # 3 s: librosa.time_to_frames(3, sr=16000, n_fft=512, hop_length=256) + 1
EMBEDDING_SIZE = 200
WEIGHTS_PATH = Path(__file__).resolve().parent / "weights" / "musicnn_mtt.safetensors"

MTT_TAGS: tuple[str, ...] = (
    "guitar", "classical", "slow", "techno", "strings", "drums", "electronic", "rock", "fast", "piano",
    "ambient", "beat", "violin", "vocal", "synth", "female", "indian", "opera", "male", "singing",
    "vocals", "no vocals", "harpsichord", "loud", "quiet", "flute", "woman", "male vocal", "no vocal", "pop",
    "soft", "sitar", "solo", "man", "classic", "choir", "voice", "new age", "dance", "male voice",
    "female vocal", "beats", "harp", "cello", "no voice", "weird", "country", "metal", "female voice", "choral",
)  # fmt: skip

_BN_EPS = 1e-3  # TensorFlow's batch_normalization default
_TIMBRAL_BANDS = (int(0.4 * N_MELS), int(0.7 * N_MELS))  # 38 and 67 mel bands, 7 frames long
_TEMPORAL_FRAMES = (128, 64, 32)
_TIMBRAL_FILTERS = int(1.6 * 128)  # 204
_TEMPORAL_FILTERS = int(1.6 * 32)  # 51
_MID_FILTERS = 64


class _ConvBlock(nn.Module):
    """A 2-D convolution, ReLU, batch norm, then max pooling over the whole frequency axis."""

    def __init__(self, filters: int, kernel: tuple[int, int], time_padding: tuple[int, int]) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, filters, kernel)
        self.norm = nn.BatchNorm2d(filters, eps=_BN_EPS)
        self.time_padding = time_padding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 1, time, mels)`` -> ``(B, filters, time)``."""
        x = F.pad(x, (0, 0, *self.time_padding))
        return self.norm(F.relu(self.conv(x))).amax(dim=-1)


class _MidConv(nn.Module):
    """A 7-frame 1-D convolution over all input channels, ReLU, batch norm (time preserved)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv1d(channels, _MID_FILTERS, 7, padding=3)
        self.norm = nn.BatchNorm1d(_MID_FILTERS, eps=_BN_EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(F.relu(self.conv(x)))


class MusicnnMTT(nn.Module):
    """The ``MTT_musicnn`` network: spectrogram patches ``(B, 187, 96)`` to (logits, embeddings)."""

    def __init__(self) -> None:
        super().__init__()
        self.input_norm = nn.BatchNorm2d(1, eps=_BN_EPS)
        # Timbral blocks pad time by 3 on each side; temporal ones use TensorFlow's "same"
        # padding, which puts the odd extra frame of an even kernel at the end.
        self.timbral = nn.ModuleList(_ConvBlock(_TIMBRAL_FILTERS, (7, bands), (3, 3)) for bands in _TIMBRAL_BANDS)
        self.temporal = nn.ModuleList(
            _ConvBlock(_TEMPORAL_FILTERS, (frames, 1), ((frames - 1) // 2, frames // 2)) for frames in _TEMPORAL_FRAMES
        )
        front = len(_TIMBRAL_BANDS) * _TIMBRAL_FILTERS + len(_TEMPORAL_FRAMES) * _TEMPORAL_FILTERS  # 561
        self.mid = nn.ModuleList([_MidConv(front), _MidConv(_MID_FILTERS), _MidConv(_MID_FILTERS)])
        pooled = 2 * (front + 3 * _MID_FILTERS)  # max and mean of 753 channels
        self.pool_norm = nn.BatchNorm1d(pooled, eps=_BN_EPS)
        self.dense = nn.Linear(pooled, EMBEDDING_SIZE)
        self.dense_norm = nn.BatchNorm1d(EMBEDDING_SIZE, eps=_BN_EPS)
        self.classifier = nn.Linear(EMBEDDING_SIZE, len(MTT_TAGS))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return tag logits ``(B, 50)`` and penultimate embeddings ``(B, 200)``."""
        x = self.input_norm(x.unsqueeze(1))
        front = torch.cat([block(x) for block in (*self.timbral, *self.temporal)], dim=1)  # (B, 561, T)
        first = self.mid[0](front)
        second = self.mid[1](first) + first
        third = self.mid[2](second) + second
        features = torch.cat([front, first, second, third], dim=1)  # (B, 753, T)
        # Interleave as TensorFlow flattens (B, 753, [max, mean]).
        pooled = torch.stack([features.amax(dim=-1), features.mean(dim=-1)], dim=-1).flatten(1)
        embedding = self.dense_norm(F.relu(self.dense(self.pool_norm(pooled))))
        return self.classifier(embedding), embedding


def load_musicnn(
    path: str | os.PathLike[str] = WEIGHTS_PATH, device: str | torch.device = "cpu"
) -> MusicnnMTT:
    """The network with converted weights from ``path``, in eval mode on ``device``."""
    model = MusicnnMTT()
    model.load_state_dict(load_file(str(path)))
    return model.eval().to(device)


@functools.lru_cache(maxsize=1)
def _shipped_model() -> MusicnnMTT:
    return load_musicnn()


def log_mel(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """musicnn's input spectrogram ``(frames, 96)`` float32 of mono-mixed, 16 kHz audio.

    ``audio`` is ``(samples,)`` or ``(channels, samples)`` at ``sample_rate``; it is resampled
    as ``librosa.load`` does (soxr, high quality).
    """
    mono = mono_signal(audio)
    if sample_rate != SAMPLE_RATE:
        mono = librosa.resample(mono, orig_sr=sample_rate, target_sr=SAMPLE_RATE, res_type="soxr_hq")
    mel = librosa.feature.melspectrogram(y=mono, sr=SAMPLE_RATE, n_fft=N_FFT, hop_length=HOP, n_mels=N_MELS)
    return np.log10(1.0 + 10000.0 * mel.T).astype(np.float32)


def patches(spectrogram: np.ndarray) -> np.ndarray:
    """Non-overlapping 187-frame patches ``(n, 187, 96)`` of a ``(frames, 96)`` spectrogram."""
    frames = spectrogram.shape[0]
    if frames == 0:
        raise ValueError("the audio is too short for a single spectrogram frame")
    if frames < PATCH_FRAMES:
        spectrogram = np.concatenate([spectrogram] * -(-PATCH_FRAMES // frames))[:PATCH_FRAMES]
        frames = PATCH_FRAMES
    count = frames // PATCH_FRAMES
    return spectrogram[: count * PATCH_FRAMES].reshape(count, PATCH_FRAMES, spectrogram.shape[1])


@dataclasses.dataclass(frozen=True)
class MusicnnOutput:
    """Per-patch outputs: ``embeddings`` ``(n, 200)`` and tag ``probabilities`` ``(n, 50)``."""

    embeddings: np.ndarray
    probabilities: np.ndarray


@torch.no_grad()
def analyse(
    audio: np.ndarray, sample_rate: int, model: MusicnnMTT | None = None, batch_size: int = 32
) -> MusicnnOutput:
    """Penultimate embeddings and tag probabilities of every 3-second patch of ``audio``.

    ``model`` defaults to the shipped weights on the CPU.
    """
    model = model if model is not None else _shipped_model()
    device = next(model.parameters()).device
    batch = torch.from_numpy(patches(log_mel(audio, sample_rate)))
    logits, embeds = zip(*(model(chunk.to(device)) for chunk in batch.split(batch_size)))
    return MusicnnOutput(
        embeddings=torch.cat(embeds).cpu().numpy(),
        probabilities=torch.cat(logits).sigmoid().cpu().numpy(),
    )


def embeddings(audio: np.ndarray, sample_rate: int, model: MusicnnMTT | None = None) -> np.ndarray:
    """Penultimate-layer embeddings ``(patches, 200)`` of ``audio``."""
    return analyse(audio, sample_rate, model).embeddings


def tag_probabilities(audio: np.ndarray, sample_rate: int, model: MusicnnMTT | None = None) -> np.ndarray:
    """Tag probabilities ``(patches, 50)`` of ``audio``, in :data:`MTT_TAGS` order."""
    return analyse(audio, sample_rate, model).probabilities
