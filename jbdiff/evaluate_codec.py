"""``jbdiff eval codec``: reconstruction quality and codebook use of a codec, per level.

Each audio file is loaded (at the codec's rate and channel count, mono for Jukebox codecs;
at most ``seconds`` from its start) and encoded at every level; each level's codes are
decoded back to audio, trimmed to the input length and compared with the input:
multi-resolution STFT distance, mel distance and SI-SDR (:mod:`jbdiff.metrics.codec`, auraloss
defaults as in Stable Audio 2, Table 5). Per level the report gives the unweighted mean over
files, plus codebook usage and perplexity of the codes of all files together (from a running
histogram, so memory does not grow with the number of files).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import statistics
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from jbdiff.core.atomic import atomic_path
from jbdiff.core.audio import AudioError, list_audio_files, load_audio
from jbdiff.core.errors import JbdiffError
from jbdiff.core.report import json_safe, markdown_table
from jbdiff.metrics.codec import (
    ReconstructionMetrics,
    histogram_perplexity,
    histogram_usage,
    reconstruction_metrics,
)
from levels.codec import Codec

__all__ = ["CodecReport", "FileResult", "LevelResult", "SkippedFile", "evaluate_codec"]

logger = logging.getLogger(__name__)

# Shorter files are skipped: the largest STFT of the metrics (2048 points) needs more.
MIN_SECONDS = 0.1


@dataclasses.dataclass(frozen=True)
class LevelResult:
    """One level's summary: mean metrics over files and codebook statistics over all codes."""

    level: int
    hop: int
    stft: float
    mel: float
    si_sdr: float
    usage: float
    perplexity: float


@dataclasses.dataclass(frozen=True)
class FileResult:
    """One file's seconds evaluated and its metrics, indexed by level."""

    path: str
    seconds: float
    levels: tuple[ReconstructionMetrics, ...]


@dataclasses.dataclass(frozen=True)
class SkippedFile:
    """A file that could not be evaluated, and why."""

    path: str
    reason: str


@dataclasses.dataclass(frozen=True)
class CodecReport:
    """The result of :func:`evaluate_codec`."""

    codec_fingerprint: str
    codebook_size: int
    sample_rate: int
    data_dir: str
    seconds_limit: float | None
    levels: tuple[LevelResult, ...]
    files: tuple[FileResult, ...]
    skipped: tuple[SkippedFile, ...]

    @property
    def seconds_evaluated(self) -> float:
        """Total seconds of audio evaluated over all files."""
        return sum(file.seconds for file in self.files)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict; non-finite metric values become None."""
        return {
            "codec_fingerprint": self.codec_fingerprint,
            "codebook_size": self.codebook_size,
            "sample_rate": self.sample_rate,
            "data_dir": self.data_dir,
            "seconds_limit": self.seconds_limit,
            "files_evaluated": len(self.files),
            "seconds_evaluated": self.seconds_evaluated,
            "levels": [json_safe(dataclasses.asdict(level)) for level in self.levels],
            "files": [
                {
                    "path": file.path,
                    "seconds": file.seconds,
                    "levels": [
                        json_safe({"level": level, **metrics.as_dict()}) for level, metrics in enumerate(file.levels)
                    ],
                }
                for file in self.files
            ],
            "skipped": [dataclasses.asdict(skipped) for skipped in self.skipped],
        }

    def table(self) -> str:
        """The per-level summary as a fixed-width markdown table."""
        header = ("level", "hop", "STFT", "mel", "SI-SDR dB", "usage %", "perplexity")
        rows = [
            (
                str(level.level),
                str(level.hop),
                f"{level.stft:.3f}",
                f"{level.mel:.3f}",
                f"{level.si_sdr:.2f}",
                f"{100 * level.usage:.1f}",
                f"{level.perplexity:.1f}",
            )
            for level in self.levels
        ]
        return markdown_table(header, rows)

    def write_json(self, path: str | os.PathLike[str]) -> Path:
        """Write :meth:`to_dict` as JSON atomically; return the path."""
        path = Path(path)
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps(self.to_dict(), indent=2, allow_nan=False) + "\n")
        return path


def _level_metrics(reference: torch.Tensor, decoded: torch.Tensor, sample_rate: int) -> ReconstructionMetrics:
    """Metrics of ``decoded`` (batch, channels, >= samples) trimmed to ``reference`` (batch, channels, samples)."""
    return reconstruction_metrics(reference, decoded[..., : reference.shape[-1]].cpu(), sample_rate)


def evaluate_codec(
    codec: Codec,
    data_dir: str | os.PathLike[str],
    *,
    seconds: float | None = 30.0,
    max_files: int | None = None,
    progress: bool = True,
) -> CodecReport:
    """Evaluate ``codec`` on the audio files under ``data_dir`` (recursively, sorted).

    Reads at most ``seconds`` from the start of each file (the whole file when None) and
    the first ``max_files`` files (all when None). Files that cannot be read, or are
    shorter than 0.1 s, are skipped, logged and listed in the report. Raises JbdiffError
    when no file can be evaluated.
    """
    if seconds is not None and not (seconds > 0 and math.isfinite(seconds)):
        raise JbdiffError(f"seconds must be a positive number, got {seconds}")
    if max_files is not None and max_files < 1:
        raise JbdiffError(f"max_files must be at least 1, got {max_files}")
    paths = list_audio_files(data_dir)
    if not paths:
        raise JbdiffError(f"{data_dir}: contains no audio files")
    paths = paths[:max_files]

    bins = codec.cfg.l_bins
    counts = [torch.zeros(bins, dtype=torch.int64) for _ in range(codec.levels)]
    files: list[FileResult] = []
    skipped: list[SkippedFile] = []
    for path in tqdm(paths, desc="eval codec", unit="file", disable=not progress):
        try:
            audio = load_audio(
                path,
                sample_rate=codec.sample_rate,
                channels=codec.cfg.channels,
                duration=seconds,
                min_duration=MIN_SECONDS,
            )
        except AudioError as error:
            logger.warning("skipping %s", error)
            skipped.append(SkippedFile(str(path), str(error).removeprefix(f"{path}: ")))
            continue
        reference = torch.from_numpy(audio)[None]
        codes = codec.encode_codes(reference)
        metrics = []
        for level in range(codec.levels):
            counts[level] += torch.bincount(codes[level].reshape(-1).cpu(), minlength=bins)
            metrics.append(_level_metrics(reference, codec.decode_codes(level, codes[level]), codec.sample_rate))
        files.append(FileResult(str(path), audio.shape[-1] / codec.sample_rate, tuple(metrics)))
    if not files:
        raise JbdiffError(
            f"{data_dir}: none of its {len(paths)} audio files could be evaluated ({skipped[0].path}: {skipped[0].reason})"
        )

    levels = []
    for level in range(codec.levels):
        levels.append(
            LevelResult(
                level=level,
                hop=codec.hops[level],
                stft=statistics.fmean(file.levels[level].stft for file in files),
                mel=statistics.fmean(file.levels[level].mel for file in files),
                si_sdr=statistics.fmean(file.levels[level].si_sdr for file in files),
                usage=histogram_usage(counts[level]),
                perplexity=histogram_perplexity(counts[level]),
            )
        )
    return CodecReport(
        codec_fingerprint=codec.fingerprint(),
        codebook_size=bins,
        sample_rate=codec.sample_rate,
        data_dir=str(data_dir),
        seconds_limit=seconds,
        levels=tuple(levels),
        files=tuple(files),
        skipped=tuple(skipped),
    )
