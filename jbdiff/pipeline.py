"""Hierarchical sampling from a model bundle: continue a seed, remix a recording, generate.

``Pipeline.from_pretrained(path)`` loads a bundle (by default the demo bundle shipped inside the
package). Each method takes and returns float audio ``(channels, samples)`` with its sample
rate; given ``out`` it streams the audio to that file instead (flat memory however long the
piece) and writes a spectrogram PNG and a JSON manifest beside it. ``progress`` is ``True`` for a
tqdm bar per stage, or a callable that receives every stage's :class:`StageProgress` after each
network evaluation; it may raise to cancel the run, which then leaves no file behind.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from jbdiff import __version__
from jbdiff.bundle import Stages, load_bundle
from jbdiff.core.atomic import atomic_path
from jbdiff.core.audio import SAMPLE_RATE, resample, to_mono
from jbdiff.core.audio_stream import AudioStreamWriter
from jbdiff.core.crossfade import Crossfader
from jbdiff.core.device import resolve_device, resolve_dtype
from jbdiff.core.errors import JbdiffError
from jbdiff.core.spectrogram import Marks, save_spectrogram_png
from jbdiff.sampling_settings import SamplingSettings
from jbdiff.window_sampler import WindowSampler
from levels.codec import Codec

Sink = Callable[[int, np.ndarray], None]


@dataclass(frozen=True)
class StageProgress:
    """How far one stage of a run is: network evaluations ``done`` of ``total``, and the seconds they took."""

    stage: str
    done: int
    total: int
    seconds: float

    @property
    def remaining(self) -> float | None:
        """Seconds the stage still needs at its rate so far (``None`` before its first evaluation)."""
        return self.seconds / self.done * (self.total - self.done) if self.done else None


ProgressCallback = Callable[[tuple[StageProgress, ...]], None]


@dataclass
class Generation:
    """The result of one run: the first take's audio (``None`` when streamed to files).

    ``stages`` (when asked for) maps every stage that ran to the first take's audio after it,
    from the same pass: the stage ladder of the run (the last stage is the new audio itself).
    """

    audio: np.ndarray | None
    sample_rate: int
    seams: list[int]
    manifest: dict[str, Any]
    takes: list[np.ndarray] = field(default_factory=list)
    paths: list[Path] = field(default_factory=list)
    stages: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass(frozen=True)
class _Input:
    """Audio handed to the pipeline, converted once: (channels, samples) float32 at the model's rate."""

    samples: np.ndarray

    @classmethod
    def convert(cls, audio: np.ndarray | torch.Tensor, sample_rate: int, what: str) -> _Input:
        """Check ``audio`` ((channels, samples) or (samples,)) and resample it to the model's rate."""
        array = audio.detach().cpu().numpy() if isinstance(audio, torch.Tensor) else np.asarray(audio)
        array = (array[None] if array.ndim == 1 else array).astype(np.float32)
        if array.ndim != 2 or array.shape[0] > 8:
            raise JbdiffError(f"{what}: expected audio shaped (channels, samples), got shape {array.shape}")
        if sample_rate <= 0:
            raise JbdiffError(f"{what}: sample rate must be positive, got {sample_rate}")
        if not np.isfinite(array).all():
            raise JbdiffError(f"{what}: contains NaN or infinite samples")
        return cls(np.ascontiguousarray(resample(array, sample_rate)))

    @property
    def length(self) -> int:
        return self.samples.shape[-1]

    def aligned(self, grain: int) -> _Input:
        """Without its first ``length % grain`` samples, so that it ends on the latent grid."""
        return _Input(self.samples[:, self.length % grain :])

    def mono(self) -> torch.Tensor:
        """(1, 1, samples): what the codec reads."""
        return torch.from_numpy(np.ascontiguousarray(to_mono(self.samples)))[None]

    def with_channels(self, channels: int) -> torch.Tensor:
        """(channels, samples), mixed down to mono or a mono input duplicated to stereo."""
        array = to_mono(self.samples) if channels == 1 else self.samples
        if array.shape[0] < channels:
            array = np.repeat(array, channels, axis=0)
        return torch.from_numpy(np.ascontiguousarray(array[:channels]))


class Pipeline:
    """A loaded model bundle on one device, ready to continue, remix and generate."""

    def __init__(
        self,
        stages: Stages,
        *,
        path: Path,
        device: torch.device,
        dtype: torch.dtype,
        fingerprints: dict[str, str],
        settings: SamplingSettings,
    ) -> None:
        self.stages, self.path, self.device, self.dtype = stages, path, device, dtype
        self.fingerprints = fingerprints
        self.settings = settings  # the bundle's recommended sampling settings (its ``sampling`` section)

    @property
    def codec(self) -> Codec:
        """The bundle's codec."""
        return self.stages.codec

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike[str] | None = None, *, device: str = "auto", dtype: str = "float32") -> Pipeline:
        """Load a model bundle folder (``None``: the demo bundle shipped with jbdiff)."""
        torch_device, torch_dtype = resolve_device(device), resolve_dtype(dtype)
        bundle = load_bundle(path, device=torch_device, dtype=torch_dtype)
        return cls(
            bundle.stages, path=bundle.path, device=torch_device, dtype=torch_dtype,
            fingerprints=bundle.fingerprints, settings=bundle.settings,
        )

    def continue_(
        self,
        audio: np.ndarray | torch.Tensor,
        sample_rate: int,
        seconds: float,
        *,
        include_seed: bool = False,
        keep_stages: bool = False,
        settings: SamplingSettings | None = None,
        out: str | os.PathLike[str] | None = None,
        progress: bool | ProgressCallback = False,
        **changes: Any,
    ) -> Generation:
        """Continue ``audio`` (the seed) by ``seconds``; ``include_seed`` returns seed + continuation.

        ``keep_stages`` also returns the continuation as it was after every stage
        (``Generation.stages``, without the seed), tapped from the same sampling run.
        """
        settings = self._settings(settings, changes, generating="continuing a seed")
        total = self._samples(seconds)
        seed = self._model_input(audio, sample_rate, "seed").aligned(max(self.codec.hops))
        sampler = self._sampler(settings)
        sampler.prime(seed.mono())
        seed_out = seed.with_channels(sampler.channels)
        lead, previous = 0, None
        if include_seed:
            lead = seed_out.shape[-1]
            if lead >= sampler.overlap:
                previous = seed_out[..., lead - sampler.overlap :].expand(settings.batch, -1, -1)
        job = _Job(total=total, lead=lead, previous=previous, seed_audio=seed_out if include_seed else None, keep_stages=keep_stages)
        return self._render("continue", sampler, settings, job, out, progress, {"seconds": seconds, "include_seed": include_seed})

    def generate(
        self,
        seconds: float,
        *,
        settings: SamplingSettings | None = None,
        out: str | os.PathLike[str] | None = None,
        progress: bool | ProgressCallback = False,
        **changes: Any,
    ) -> Generation:
        """``seconds`` of new music from an empty context."""
        settings = self._settings(settings, changes, generating="generating")
        sampler = self._sampler(settings)
        return self._render("generate", sampler, settings, _Job(total=self._samples(seconds)), out, progress, {"seconds": seconds})

    def remix(
        self,
        audio: np.ndarray | torch.Tensor,
        sample_rate: int,
        strength: float,
        *,
        context: tuple[np.ndarray | torch.Tensor, int] | None = None,
        settings: SamplingSettings | None = None,
        out: str | os.PathLike[str] | None = None,
        progress: bool | ProgressCallback = False,
        **changes: Any,
    ) -> Generation:
        """Re-noise ``audio`` to ``strength`` at the first level in ``levels`` and denoise it.

        The result has the input's length. ``context`` (audio, sample rate) fills the first
        window's context, as a seed does for a continuation; without it the start is
        unconditional.
        """
        if not 0.0 <= strength <= 1.0:
            raise JbdiffError(f"remix strength must be in [0, 1], got {strength}")
        settings = self._settings(settings, changes)
        source = self._model_input(audio, sample_rate, "input").mono()
        sampler = self._sampler(settings)
        if context is not None:
            sampler.prime(self._model_input(context[0], context[1], "context").aligned(max(self.codec.hops)).mono())
        job = _Job(total=source.shape[-1], source=source.to(self.device), strength=strength)
        return self._render("remix", sampler, settings, job, out, progress, {"strength": strength, "context": context is not None})

    def _settings(self, settings: SamplingSettings | None, changes: dict[str, Any], *, generating: str = "") -> SamplingSettings:
        """``settings`` (default: the bundle's) with ``changes``; ``generating`` names a run that needs level 2."""
        settings = settings or self.settings
        settings = settings.replace(**changes) if changes else settings
        if generating and "level2" not in settings.levels:
            raise JbdiffError(f"{generating} needs level 2 (the base prior) in --levels")
        return settings

    def _model_input(self, audio: np.ndarray | torch.Tensor, sample_rate: int, what: str) -> _Input:
        """``audio`` at the model's rate, refused when shorter than one coarsest latent frame."""
        converted = _Input.convert(audio, sample_rate, what)
        frame = max(self.codec.hops)
        if converted.length < frame:
            raise JbdiffError(f"{what}: {converted.length} samples is shorter than one latent frame ({frame} samples at {SAMPLE_RATE} Hz)")
        return converted

    def _samples(self, seconds: float) -> int:
        if not seconds > 0 or not math.isfinite(seconds):
            raise JbdiffError(f"seconds must be a positive number, got {seconds}")
        return round(seconds * SAMPLE_RATE)

    def _sampler(self, settings: SamplingSettings) -> WindowSampler:
        return WindowSampler(self.stages, settings, device=self.device, dtype=self.dtype)

    def _render(
        self,
        command: str,
        sampler: WindowSampler,
        settings: SamplingSettings,
        job: _Job,
        out: str | os.PathLike[str] | None,
        progress: bool | ProgressCallback,
        extra: dict[str, Any],
    ) -> Generation:
        passes = math.ceil(job.total / sampler.chunk)
        totals: dict[str, int] = {}
        for name in settings.levels:
            strength = job.strength if (job.source is not None and name == settings.levels[0]) else None
            totals[name] = passes * settings.stage(name).evaluations(None if strength is None else 1.0 - strength)
        tracker = _Progress(totals, progress)
        sampler.progress = tracker.step
        started = time.perf_counter()
        takes: list[list[np.ndarray]] = [[] for _ in range(settings.batch)]
        paths = _take_paths(Path(out), settings.batch) if out is not None else []
        ladder = _StageLadder(sampler, job.total) if job.keep_stages else None
        try:
            tracker.report()
            if out is None:
                self._stream(sampler, job, lambda take, piece: takes[take].append(piece))
            else:
                with contextlib.ExitStack() as stack:
                    writers = [stack.enter_context(AudioStreamWriter(p, sampler.channels, SAMPLE_RATE)) for p in paths]
                    self._stream(sampler, job, lambda take, piece: writers[take].write(piece))
        finally:
            tracker.close()
            sampler.stage_audio = None
        stages = ladder.audio() if ladder is not None else {}
        seams = [job.lead + k * sampler.chunk for k in range(1, passes)]
        seams = ([job.lead] if job.lead else []) + [s for s in seams if s < job.lead + job.total]
        manifest = self._manifest(command, settings, sampler, job, seams, time.perf_counter() - started, extra, paths)
        if out is not None:
            marks = Marks(seams=[s / SAMPLE_RATE for s in seams if s != job.lead], seed_end=job.lead / SAMPLE_RATE if job.lead else None)
            for path in paths:
                save_spectrogram_png(path, path.with_suffix(".png"), marks)
            with atomic_path(Path(out).with_suffix(".json")) as tmp:
                tmp.write_text(json.dumps(manifest, indent=2))
            return Generation(None, SAMPLE_RATE, seams, manifest, paths=paths, stages=stages)
        arrays = [np.concatenate(pieces, axis=-1) for pieces in takes]
        return Generation(arrays[0], SAMPLE_RATE, seams, manifest, takes=arrays, stages=stages)

    def _stream(self, sampler: WindowSampler, job: _Job, sink: Sink) -> None:
        batch = sampler.settings.batch
        fader = Crossfader(sampler.overlap, sampler.settings.crossfade, total=job.total + (sampler.overlap if job.previous is not None else 0), previous=job.previous)
        if job.seed_audio is not None:
            body = job.seed_audio[..., : job.seed_audio.shape[-1] - (sampler.overlap if job.previous is not None else 0)]
            for take in range(batch):
                sink(take, body.numpy())
        for start in range(0, job.total, sampler.chunk):
            init = None
            if job.source is not None:
                init = self._source_latents(sampler, job.source, start)
            _emit(sink, fader.push(sampler.next_pass(init, job.strength)))
        _emit(sink, fader.flush())

    def _source_latents(self, sampler: WindowSampler, source: torch.Tensor, start: int) -> torch.Tensor:
        """The first level's latents of the input over one pass (encoded with its left margin)."""
        level = sampler.levels[0]
        margin = sampler.encode_margin[level]
        piece = source[..., max(0, start - margin) : start + sampler.chunk]
        piece = torch.nn.functional.pad(piece, (0, start + sampler.chunk - max(0, start - margin) - piece.shape[-1]))
        latents = self.codec.encode(piece, [level])[level][..., -(sampler.chunk // self.codec.hops[level]) :]
        return latents.expand(sampler.settings.batch, -1, -1)

    def _manifest(
        self, command: str, settings: SamplingSettings, sampler: WindowSampler, job: _Job, seams: list[int],
        wall: float, extra: dict[str, Any], paths: list[Path],
    ) -> dict[str, Any]:
        produced = job.total / SAMPLE_RATE * settings.batch
        return {
            "command": command,
            **extra,
            "settings": dataclasses.asdict(settings),
            "model": str(self.path),
            "fingerprints": self.fingerprints,
            "device": str(self.device),
            "dtype": str(self.dtype).removeprefix("torch."),
            "sample_rate": SAMPLE_RATE,
            "channels": sampler.channels,
            "samples": job.lead + job.total,
            "seams": seams,
            "passes": math.ceil(job.total / sampler.chunk),
            "timings_s": {name: round(value, 3) for name, value in sampler.timings.items()},
            "wall_s": round(wall, 3),
            "seconds_per_second": round(produced / wall, 4) if wall > 0 else None,
            "outputs": [str(p) for p in paths],
            "jbdiff_version": __version__,
            "torch_version": torch.__version__,
            "platform": platform.platform(),
        }


class _Progress:
    """Counts each stage's network evaluations for its tqdm bar or the caller's callback."""

    def __init__(self, totals: dict[str, int], progress: bool | ProgressCallback) -> None:
        self.totals, self.callback = totals, progress if callable(progress) else None
        self.done, self.seconds = dict.fromkeys(totals, 0), dict.fromkeys(totals, 0.0)
        self.bars = {
            name: tqdm(total=total, desc=f"{name:>6}", unit="step", position=position, leave=True,
                       disable=progress is not True, dynamic_ncols=True)
            for position, (name, total) in enumerate(totals.items())
        }
        self.last = time.perf_counter()

    def step(self, stage: str) -> None:
        """One network evaluation of ``stage`` is done (the time since the last one is counted to it)."""
        now = time.perf_counter()
        self.seconds[stage] += now - self.last
        self.last = now
        self.done[stage] += 1
        self.bars[stage].update()
        self.report()

    def report(self) -> None:
        """Hand every stage's progress to the callback (when there is one)."""
        if self.callback is not None:
            self.callback(tuple(StageProgress(name, self.done[name], total, self.seconds[name]) for name, total in self.totals.items()))

    def close(self) -> None:
        for bar in self.bars.values():
            bar.close()


@dataclass
class _Job:
    """What a run produces: ``total`` new samples, after ``lead`` samples of seed when included."""

    total: int
    lead: int = 0
    previous: torch.Tensor | None = None
    seed_audio: torch.Tensor | None = None
    source: torch.Tensor | None = None
    strength: float = 1.0
    keep_stages: bool = False


class _StageLadder:
    """Taps a sampler's every stage and crossfades each into a piece of its own (first take only)."""

    def __init__(self, sampler: WindowSampler, total: int) -> None:
        self.overlap, self.style, self.total = sampler.overlap, sampler.settings.crossfade, total
        self.faders: dict[str, Crossfader] = {}
        self.pieces: dict[str, list[np.ndarray]] = {}
        sampler.stage_audio = self.push

    def push(self, stage: str, audio: torch.Tensor) -> None:
        if stage not in self.faders:
            self.faders[stage] = Crossfader(self.overlap, self.style, total=self.total)
            self.pieces[stage] = []
        self.pieces[stage].append(self.faders[stage].push(audio[:1]).detach().cpu().numpy()[0])

    def audio(self) -> dict[str, np.ndarray]:
        """Each stage's piece (channels, samples), in the order the stages ran."""
        for stage, fader in self.faders.items():
            self.pieces[stage].append(fader.flush().detach().cpu().numpy()[0])
        return {stage: np.concatenate(pieces, axis=-1) for stage, pieces in self.pieces.items()}


def _emit(sink: Sink, audio: torch.Tensor) -> None:
    piece = audio.detach().cpu().numpy()
    for take in range(piece.shape[0]):
        sink(take, piece[take])


def _take_paths(out: Path, batch: int) -> list[Path]:
    if batch == 1:
        return [out]
    return [out.with_name(f"{out.stem}_take{i + 1}{out.suffix}") for i in range(batch)]
