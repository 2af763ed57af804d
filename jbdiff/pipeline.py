"""Hierarchical sampling from a model bundle: continue a seed, remix a recording, generate,
and edit one: inpaint a region, extend it before or after, loop it, morph between two.

``Pipeline.from_pretrained(path)`` loads a bundle (by default the demo bundle shipped inside the
package). Each method takes and returns float audio ``(channels, samples)`` with its sample
rate; given ``out`` it streams the audio to that file instead (flat memory however long the
piece) and writes a spectrogram PNG (edited regions marked) and a JSON manifest beside it. ``progress`` is ``True`` for a
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
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from tqdm import tqdm

from jbdiff import __version__
from jbdiff.bundle import Stages, load_bundle
from jbdiff.core.atomic import atomic_path
from jbdiff.core.audio import (
    SAMPLE_RATE,
    audio_info,
    load_audio,
    loudness_gain,
    resample,
    to_mono,
)
from jbdiff.core.audio_stream import AudioStreamReader, AudioStreamWriter
from jbdiff.core.crossfade import Crossfader, splice
from jbdiff.core.device import resolve_device, resolve_dtype
from jbdiff.core.errors import JbdiffError
from jbdiff.core.noise import slerp
from jbdiff.core.outputs import claim_outputs
from jbdiff.core.report import json_safe
from jbdiff.core.spectrogram import Marks, save_spectrogram_png
from jbdiff.core.tone import ToneMatch
from jbdiff.editing import Region, Span, pass_latents
from jbdiff.sampling_settings import SamplingSettings
from jbdiff.window_sampler import WindowSampler
from levels.codec import Codec

Sink = Callable[[int, np.ndarray], None]
LOOP_JOIN_SECONDS = 2.0  # the longest stretch around a loop's wrap point that is regenerated
_BLOCK = 1 << 18  # samples per write when saving audio held in memory


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
        overwrite: bool = True,
        progress: bool | ProgressCallback = False,
        **changes: Any,
    ) -> Generation:
        """Continue ``audio`` (the seed) by ``seconds``; ``include_seed`` returns seed + continuation.

        ``keep_stages`` also returns the continuation as it was after every stage
        (``Generation.stages``, without the seed), tapped from the same sampling run.
        """
        return self._continue("continue", audio, sample_rate, seconds, include_seed, settings, out, progress, changes, keep_stages, overwrite)

    def _continue(
        self, command: str, audio: np.ndarray | torch.Tensor, sample_rate: int, seconds: float, include_seed: bool,
        settings: SamplingSettings | None, out: str | os.PathLike[str] | None, progress: bool | ProgressCallback, changes: dict[str, Any],
        keep_stages: bool = False, overwrite: bool = True,
    ) -> Generation:
        settings = self._settings(settings, changes, generating="continuing a seed")
        total = self._samples(seconds)
        whole = self._model_input(audio, sample_rate, "seed")
        seed = whole.aligned(max(self.codec.hops))
        sampler = self._sampler(settings)
        sampler.prime(seed.mono())
        seed_out = whole.with_channels(sampler.channels)
        lead, previous = 0, None
        if include_seed:
            lead = seed_out.shape[-1]
            if lead >= sampler.overlap:
                previous = seed_out[..., lead - sampler.overlap :].expand(settings.batch, -1, -1)
        level = _seed_loudness(seed_out)  # None for a silent seed: nothing to match
        loudness = level if settings.match_loudness else None
        tone = seed_out[..., -_MATCH_SPAN:] if settings.match_tone and level is not None else None
        echo = _LoopSource(seed.mono()[..., -_ECHO_SPAN:]) if settings.seed_echo > 0 else None
        job = _Job(
            total=total, lead=lead, previous=previous, seed_audio=seed_out if include_seed else None, source=echo,
            strength=1.0 - settings.seed_echo, keep_stages=keep_stages, loudness=loudness,
            tone_reference=tone,
        )
        return self._render(command, sampler, settings, job, out, progress, {"seconds": seconds, "include_seed": include_seed}, overwrite=overwrite)

    def generate(
        self,
        seconds: float,
        *,
        settings: SamplingSettings | None = None,
        out: str | os.PathLike[str] | None = None,
        overwrite: bool = True,
        progress: bool | ProgressCallback = False,
        **changes: Any,
    ) -> Generation:
        """``seconds`` of new music from an empty context."""
        settings = self._settings(settings, changes, generating="generating")
        sampler = self._sampler(settings)
        return self._render("generate", sampler, settings, _Job(total=self._samples(seconds)), out, progress, {"seconds": seconds}, overwrite=overwrite)

    def remix(
        self,
        audio: np.ndarray | torch.Tensor | str | os.PathLike[str],
        sample_rate: int,
        strength: float,
        *,
        context: tuple[np.ndarray | torch.Tensor, int] | str | os.PathLike[str] | None = None,
        settings: SamplingSettings | None = None,
        out: str | os.PathLike[str] | None = None,
        overwrite: bool = True,
        progress: bool | ProgressCallback = False,
        **changes: Any,
    ) -> Generation:
        """Re-noise ``audio`` to ``strength`` at the first level in ``levels`` and denoise it.

        The result has the input's length. ``audio`` may be an audio file, which is then read a
        block per pass (at its own sample rate; ``sample_rate`` is not used), so memory does not
        grow with its length. ``context`` (audio, sample rate) fills the first window's context,
        as a seed does for a continuation; without it the start is unconditional. It may be an
        audio file too, of which only the end that the context needs is read.
        """
        if not 0.0 <= strength <= 1.0:
            raise JbdiffError(f"remix strength must be in [0, 1], got {strength}")
        settings = self._settings(settings, changes)
        source: _Source = _FileSource(AudioStreamReader(audio)) if isinstance(audio, (str, os.PathLike)) else _ArraySource(
            self._model_input(audio, sample_rate, "input").mono())
        frame = max(self.codec.hops)
        if source.length < frame:
            raise JbdiffError(f"input: {source.length} samples is shorter than one latent frame ({frame} samples at {SAMPLE_RATE} Hz)")
        sampler = self._sampler(settings)
        if context is not None:
            sampler.prime(self._context_audio(context, sampler.prime_samples))
        job = _Job(total=source.length, source=source, strength=strength)
        return self._render("remix", sampler, settings, job, out, progress, {"strength": strength, "context": context is not None}, overwrite=overwrite)

    def inpaint(
        self,
        audio: np.ndarray | torch.Tensor,
        sample_rate: int,
        start: float,
        end: float,
        *,
        fade: float | None = None,
        jumps: int = 0,
        settings: SamplingSettings | None = None,
        out: str | os.PathLike[str] | None = None,
        progress: bool | ProgressCallback = False,
        **changes: Any,
    ) -> Generation:
        """Regenerate ``audio`` between ``start`` and ``end`` seconds so that it joins what is around it.

        Every stage keeps the input's own material outside the region (RePaint-style, with
        ``jumps`` resamplings per step at the first level) with the music before as context;
        the result is spliced in with equal-power fades of ``fade`` seconds at the region's two
        ends, inside it (default 0.05 s, at most half the region), so that outside the region
        the output is the input.
        """
        settings = self._settings(settings, changes, generating="inpainting")
        _check_jumps(jumps)
        source = self._model_input(audio, sample_rate, "input")
        region = Region.from_seconds(start, end, fade, source.length, max(self.codec.hops), "input")
        original = torch.from_numpy(source.samples)[None]
        return self._repaint("inpaint", settings, original, region, jumps, progress, out, [region.start, region.end], {})

    def extend(
        self,
        audio: np.ndarray | torch.Tensor,
        sample_rate: int,
        *,
        before: float | None = None,
        after: float | None = None,
        fade: float | None = None,
        jumps: int = 0,
        settings: SamplingSettings | None = None,
        out: str | os.PathLike[str] | None = None,
        progress: bool | ProgressCallback = False,
        **changes: Any,
    ) -> Generation:
        """``audio`` with new music ``after`` seconds past its end (a continuation that includes
        it) or ``before`` seconds ahead of its start (inpainted with no left context, to lead
        into it; faded into the input over ``fade`` seconds)."""
        if (before is None) == (after is None):
            raise JbdiffError("extend needs exactly one of before and after")
        if after is not None:
            return self._continue("extend", audio, sample_rate, after, True, settings, out, progress, changes)
        assert before is not None
        settings = self._settings(settings, changes, generating="extending")
        _check_jumps(jumps)
        source = self._model_input(audio, sample_rate, "input")
        lead = self._samples(before)
        original = torch.nn.functional.pad(torch.from_numpy(source.samples), (lead, 0))[None]
        region = Region.from_seconds(0.0, lead / SAMPLE_RATE, fade, original.shape[-1], max(self.codec.hops), "before")
        return self._repaint("extend", settings, original, region, jumps, progress, out, [lead], {"before": before})

    def _repaint(
        self, command: str, settings: SamplingSettings, original: torch.Tensor, region: Region, jumps: int,
        progress: bool | ProgressCallback, out: str | os.PathLike[str] | None, seams: list[int], extra: dict[str, Any],
    ) -> Generation:
        """``original`` (1, channels, samples) with ``region`` regenerated (inpaint, extend before), delivered."""
        sampler = self._sampler(settings)
        started = time.perf_counter()
        takes, passes = self._inpainted(sampler, settings, original, region, jumps, progress)
        run = _Run(command, settings, sampler, original.shape[-1], region.end - region.start, passes, seams, time.perf_counter() - started)
        extra = {**extra, "region": region.seconds(), "jumps": jumps}
        return self._deliver(run, takes, out, extra, [(region.start / SAMPLE_RATE, region.end / SAMPLE_RATE)])

    def loop(
        self,
        audio: np.ndarray | torch.Tensor,
        sample_rate: int,
        seconds: float,
        *,
        fade: float | None = None,
        jumps: int = 0,
        settings: SamplingSettings | None = None,
        out: str | os.PathLike[str] | None = None,
        progress: bool | ProgressCallback = False,
        **changes: Any,
    ) -> Generation:
        """``seconds`` of music, continuing ``audio``, whose end flows into its start (seamless on repeat).

        The piece is continued from ``audio``, turned around its middle (second half first),
        and the stretch around the resulting join (the wrap point, at most
        ``LOOP_JOIN_SECONDS``) inpainted; turned back, the wrap point falls inside the
        inpainted stretch and the inner join is the piece's own.
        """
        settings = self._settings(settings, changes, generating="looping")
        _check_jumps(jumps)
        source = self._model_input(audio, sample_rate, "input")
        sampler = self._sampler(settings)
        window = sampler.chunk // settings.window_multiplier
        if source.length < window:
            raise JbdiffError(f"input: {source.length / SAMPLE_RATE:.2f} s is shorter than one window ({window / SAMPLE_RATE:.2f} s)")
        total, grain = self._samples(seconds), max(self.codec.hops)
        if total < window:
            raise JbdiffError(f"a loop must last at least one window ({window / SAMPLE_RATE:.2f} s), got {seconds:g} s")
        started = time.perf_counter()
        piece = self._continue("loop", source.samples, SAMPLE_RATE, seconds, False, settings, None, progress, {})
        half = total // 2 // grain * grain
        turned = torch.stack([torch.roll(torch.from_numpy(take), -half, -1) for take in piece.takes])
        join = total - half
        width = min(round(LOOP_JOIN_SECONDS * SAMPLE_RATE), total // 3) // 2
        region = Region.from_seconds((join - width) / SAMPLE_RATE, (join + width) / SAMPLE_RATE, fade, total, grain, "loop")
        takes, passes = self._inpainted(sampler, settings, turned, region, jumps, progress)
        looped = [torch.roll(take, half, -1) for take in takes]
        wrap = ((region.start + half) % total / SAMPLE_RATE, (region.end + half) % total / SAMPLE_RATE)
        run = _Run("loop", settings, sampler, total, total, piece.manifest["passes"] + passes, [0], time.perf_counter() - started)
        extra = {"seconds": seconds, "wrap_region": {"end_from": wrap[0], "start_until": wrap[1], "fade": region.fade / SAMPLE_RATE}, "jumps": jumps}
        return self._deliver(run, looped, out, extra, [(wrap[0], total / SAMPLE_RATE), (0.0, wrap[1])])

    def morph(
        self,
        a: np.ndarray | torch.Tensor,
        b: np.ndarray | torch.Tensor,
        sample_rate: int,
        clips: int,
        *,
        settings: SamplingSettings | None = None,
        out: str | os.PathLike[str] | None = None,
        progress: bool | ProgressCallback = False,
        **changes: Any,
    ) -> Generation:
        """One file of ``clips`` passes walking from recording ``a`` to ``b`` (same sample rate).

        From each, one pass (after up to a context's worth of its start) is inverted to noise
        at the first level by running the v-sampler backwards; clip k of n samples from the
        noises slerped at t = k / (n - 1) with the histories (the context of every level)
        blended linearly, the first level with the v-sampler, the later stages as usual.
        The manifest reports each inversion's round-trip error.
        """
        if clips < 1:
            raise JbdiffError(f"morph needs at least one clip, got {clips}")
        settings = self._settings(settings, changes, generating="morphing")
        settings = settings.replace(level2=dataclasses.replace(settings.level2, sampler="v"))
        ends = [self._morph_end(x, sample_rate, what, settings, progress) for x, what in ((a, "A"), (b, "B"))]
        started = time.perf_counter()
        sampler = self._sampler(settings)
        fader = Crossfader(sampler.overlap, settings.crossfade, total=clips * sampler.chunk)
        pieces = []
        with self._tracked(sampler, settings, clips, progress):
            for k in range(clips):
                t = k / (clips - 1) if clips > 1 else 0.5
                sampler.mix(ends[0].sampler, ends[1].sampler, t)
                pieces.append(fader.push(sampler.next_pass(noise=slerp(ends[0].noise, ends[1].noise, t))))
            pieces.append(fader.flush())
        takes = list(torch.cat(pieces, dim=-1).cpu())
        seams = [k * sampler.chunk for k in range(1, clips)]
        run = _Run("morph", settings, sampler, clips * sampler.chunk, clips * sampler.chunk, clips, seams, time.perf_counter() - started)
        extra = {"clips": clips, "inversion_error": {"A": ends[0].error, "B": ends[1].error}}
        return self._deliver(run, takes, out, extra, [])

    def inversion_error(self, audio: np.ndarray | torch.Tensor, sample_rate: int, steps: int, **changes: Any) -> float:
        """Relative RMS error of the first level's latents of one pass of ``audio`` after
        inverting them to noise and sampling back in ``steps`` steps (v-sampler both ways)."""
        settings = self._settings(None, changes, generating="inverting")
        settings = settings.replace(level2=dataclasses.replace(settings.level2, steps=steps, sampler="v"))
        return self._morph_end(audio, sample_rate, "input", settings, False).error

    def _morph_end(
        self, audio: np.ndarray | torch.Tensor, sample_rate: int, what: str, settings: SamplingSettings, progress: bool | ProgressCallback,
    ) -> _MorphEnd:
        """One end of a morph: a sampler primed on the music before its pass, the pass's
        level-2 noise by inversion, and the round-trip error of that inversion."""
        source = self._model_input(audio, sample_rate, what)
        sampler = self._sampler(settings)
        grain, model = max(self.codec.hops), self.stages.denoisers[2]
        if source.length < sampler.chunk:
            raise JbdiffError(
                f"{what}: {source.length / SAMPLE_RATE:.2f} s is shorter than one pass ({sampler.chunk / SAMPLE_RATE:.2f} s, "
                f"{settings.window_multiplier} window(s))"
            )
        context = model.cfg.context_length * self.codec.hops[2]
        first = min(context, source.length - sampler.chunk) // grain * grain
        mono = source.mono().to(self.device)
        if context:
            sampler.prime(torch.nn.functional.pad(mono[..., :first], (context - first, 0)))
        latents = pass_latents(sampler, mono, first, 2).to(self.dtype)
        condition = model.context_from(sampler.history[2].to(self.dtype))
        stage = settings.level2
        with tqdm(total=2 * stage.steps, desc=f"invert {what}", unit="step", disable=progress is not True, dynamic_ncols=True) as bar:
            noise = model.invert(latents, condition, steps=stage.steps, guidance=stage.guidance, progress=bar.update)
            back = model.generate(noise, condition, steps=stage.steps, guidance=stage.guidance, sampler="v", progress=bar.update)
        error = float((back.float() - latents.float()).pow(2).mean().sqrt() / latents.float().pow(2).mean().sqrt().clamp_min(1e-12))
        return _MorphEnd(sampler, noise, error)

    def _inpainted(
        self, sampler: WindowSampler, settings: SamplingSettings, original: torch.Tensor, region: Region, jumps: int, progress: bool | ProgressCallback,
    ) -> tuple[list[torch.Tensor], int]:
        """Each take (channels, samples) of ``original`` (1 or batch, channels, samples) with
        ``region`` regenerated and spliced in; and the number of passes."""
        length = original.shape[-1]
        span = Span.plan(region, sampler)
        mono = _channels(original, 1).to(self.device)
        stereo = _channels(original, 2).to(self.device) if sampler.channels == 2 else None
        if span.begin:
            sampler.prime(mono[..., : span.begin])
        fader = Crossfader(sampler.overlap, settings.crossfade, total=span.passes * span.chunk)
        pieces = []
        with self._tracked(sampler, settings, span.passes, progress, jumps=jumps):
            for index in range(span.passes):
                pieces.append(fader.push(sampler.next_pass(known=span.known(index, sampler, mono, stereo, jumps))))
            pieces.append(fader.flush())
        generated = torch.cat(pieces, dim=-1).cpu()
        start, end = region.start, region.end
        fade_in, fade_out = (region.fade if start > 0 else 0), (region.fade if end < length else 0)  # none at the file's ends
        outer = _channels(original, sampler.channels)
        takes = []
        for take in range(settings.batch):
            source = outer[min(take, outer.shape[0] - 1)]
            middle = splice(source[:, start:end], generated[take][:, start - span.begin : end - span.begin], fade_in, fade_out)
            takes.append(torch.cat([source[:, :start], middle, source[:, end:]], dim=-1))
        return takes, span.passes

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

    def _context_audio(self, context: tuple[np.ndarray | torch.Tensor, int] | str | os.PathLike[str], samples: int) -> torch.Tensor:
        """The mono end of a remix's context (audio and its rate, or a file, read from near its end)."""
        if isinstance(context, (str, os.PathLike)):
            keep = samples / SAMPLE_RATE + 1.0  # a second to spare for the resampler's edge and the alignment
            context = (load_audio(context, channels=None, offset=max(0.0, audio_info(context).duration - keep)), SAMPLE_RATE)
        return self._model_input(context[0], context[1], "context").aligned(max(self.codec.hops)).mono()

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
        *,
        overwrite: bool = True,
    ) -> Generation:
        """Run every pass of ``job``, streamed to ``out`` when given.

        Every file the run writes is checked and claimed before the first pass (see
        :mod:`jbdiff.core.outputs`), including whether it fits the free disk space.
        """
        passes = math.ceil(job.total / sampler.chunk)
        samples = (job.lead + job.total) * sampler.channels * settings.batch
        if out is None:
            _check_memory(samples * 4 * 2)  # the pieces and the joined takes
            return self._render_claimed(command, sampler, settings, job, out, progress, extra, passes)
        needed = round(samples * 4 * _STAGING_FACTOR.get(Path(out).suffix.lower(), 1.0))
        with claim_outputs(run_outputs(Path(out), settings.batch), overwrite=overwrite, needed_bytes=needed):
            return self._render_claimed(command, sampler, settings, job, out, progress, extra, passes)

    def _render_claimed(
        self, command: str, sampler: WindowSampler, settings: SamplingSettings, job: _Job, out: str | os.PathLike[str] | None,
        progress: bool | ProgressCallback, extra: dict[str, Any], passes: int,
    ) -> Generation:
        started = time.perf_counter()
        takes: list[list[np.ndarray]] = [[] for _ in range(settings.batch)]
        paths = _take_paths(Path(out), settings.batch) if out is not None else []
        ladder = _StageLadder(sampler, job.total) if job.keep_stages else None
        try:
            with self._tracked(sampler, settings, passes, progress, strength=job.strength if job.source is not None else None):
                if out is None:
                    self._stream(sampler, job, lambda take, piece: takes[take].append(piece))
                else:
                    with contextlib.ExitStack() as stack:
                        writers = [stack.enter_context(AudioStreamWriter(p, sampler.channels, SAMPLE_RATE)) for p in paths]
                        self._stream(sampler, job, lambda take, piece: writers[take].write(piece))
        finally:
            sampler.stage_audio = None
        stages = ladder.audio() if ladder is not None else {}
        seams = [job.lead + k * sampler.chunk for k in range(1, passes)]
        seams = ([job.lead] if job.lead else []) + [s for s in seams if s < job.lead + job.total]
        run = _Run(command, settings, sampler, job.lead + job.total, job.total, passes, seams, time.perf_counter() - started)
        if job.gain is not None:
            extra = {**extra, "loudness_gain_db": [round(20 * math.log10(g), 2) for g in job.gain.flatten().tolist()]}
        if job.tone is not None:
            extra = {**extra, "tone_gains_db": [[round(g, 1) for g in take] for take in job.tone.gains_db.tolist()]}
        arrays = None if out is not None else [np.concatenate(pieces, axis=-1) for pieces in takes]
        marks = Marks(seams=[s / SAMPLE_RATE for s in seams if s != job.lead], seed_end=job.lead / SAMPLE_RATE if job.lead else None)
        return self._finish(run, extra, out, paths, arrays, marks, stages=stages)

    @contextlib.contextmanager
    def _tracked(
        self, sampler: WindowSampler, settings: SamplingSettings, passes: int, progress: bool | ProgressCallback, *,
        strength: float | None = None, jumps: int = 0,
    ) -> Iterator[None]:
        """Progress of every stage over ``passes`` passes (tqdm bars or the caller's callback)."""
        totals: dict[str, int] = {}
        for name in settings.levels:
            first = name == settings.levels[0]
            evaluations = settings.stage(name).evaluations(None if strength is None or not first else 1.0 - strength)
            totals[name] = passes * evaluations * (jumps + 1 if first else 1)
        tracker = _Progress(totals, progress)
        sampler.progress = tracker.step
        try:
            tracker.report()
            yield
        finally:
            tracker.close()

    def _finish(
        self, run: _Run, extra: dict[str, Any], out: str | os.PathLike[str] | None, paths: list[Path],
        arrays: list[np.ndarray] | None, marks: Marks, stages: dict[str, np.ndarray] | None = None,
    ) -> Generation:
        """The manifest, and either the arrays returned or the files' spectrograms and manifest written."""
        manifest = self._manifest(run, extra, paths)
        stages = stages or {}
        if out is None:
            assert arrays is not None
            return Generation(arrays[0], SAMPLE_RATE, run.seams, manifest, takes=arrays, stages=stages)
        for path in paths:
            save_spectrogram_png(path, path.with_suffix(".png"), marks)
        with atomic_path(Path(out).with_suffix(".json")) as tmp:
            tmp.write_text(json.dumps(json_safe(manifest), indent=2, allow_nan=False))
        return Generation(None, SAMPLE_RATE, run.seams, manifest, paths=paths, stages=stages)

    def _deliver(
        self, run: _Run, takes: list[torch.Tensor], out: str | os.PathLike[str] | None, extra: dict[str, Any],
        regions: list[tuple[float, float]],
    ) -> Generation:
        """Finished takes held in memory (channels, samples): returned, or written block by block."""
        if out is None:
            return self._finish(run, extra, None, [], [take.numpy() for take in takes], Marks(regions=regions))
        paths = _take_paths(Path(out), len(takes))
        needed = round(sum(take.numel() for take in takes) * 4 * _STAGING_FACTOR.get(Path(out).suffix.lower(), 1.0))
        with claim_outputs(run_outputs(Path(out), len(takes)), overwrite=True, needed_bytes=needed):
            with contextlib.ExitStack() as stack:
                for path, take in zip(paths, takes):
                    writer = stack.enter_context(AudioStreamWriter(path, take.shape[0], SAMPLE_RATE))
                    for first in range(0, take.shape[-1], _BLOCK):
                        writer.write(take[:, first : first + _BLOCK].numpy())
            return self._finish(run, extra, out, paths, None, Marks(regions=regions))

    def _stream(self, sampler: WindowSampler, job: _Job, sink: Sink) -> None:
        batch = sampler.settings.batch
        fader = Crossfader(sampler.overlap, sampler.settings.crossfade, total=job.total + (sampler.overlap if job.previous is not None else 0), previous=job.previous)
        if job.seed_audio is not None:
            body = job.seed_audio[..., : job.seed_audio.shape[-1] - (sampler.overlap if job.previous is not None else 0)]
            for take in range(batch):
                sink(take, body.numpy())
        held: list[torch.Tensor] = []  # passes not emitted yet: with match_loudness or match_tone, until they are set
        for start in range(0, job.total, sampler.chunk):
            init = None
            if job.source is not None:
                init = self._source_latents(sampler, job.source, start)
            held.append(sampler.next_pass(init, job.strength))
            if job.unsettled:
                if start + sampler.chunk < min(job.total, _MATCH_SPAN):
                    continue
                job.settle(torch.cat(held, dim=-1))
            for audio in held:
                _emit(sink, fader.push(job.master(audio)))
            held.clear()
        _emit(sink, fader.flush())

    def _source_latents(self, sampler: WindowSampler, source: _Source, start: int) -> torch.Tensor:
        """The first level's latents of the input over one pass (encoded with its left margin)."""
        level = sampler.levels[0]
        margin = sampler.encode_margin[level]
        piece = source.piece(max(0, start - margin), start + sampler.chunk).to(self.device)
        latents = self.codec.encode(piece, [level])[level][..., -(sampler.chunk // self.codec.hops[level]) :]
        return latents.expand(sampler.settings.batch, -1, -1)

    def _manifest(self, run: _Run, extra: dict[str, Any], paths: list[Path]) -> dict[str, Any]:
        produced = run.produced / SAMPLE_RATE * run.settings.batch
        return {
            "command": run.command,
            **extra,
            "settings": dataclasses.asdict(run.settings),
            "model": str(self.path),
            "fingerprints": self.fingerprints,
            "device": str(self.device),
            "dtype": str(self.dtype).removeprefix("torch."),
            "sample_rate": SAMPLE_RATE,
            "channels": run.sampler.channels,
            "samples": run.samples,
            "seams": run.seams,
            "passes": run.passes,
            "timings_s": {name: round(value, 3) for name, value in run.sampler.timings.items()},
            "wall_s": round(run.wall, 3),
            "seconds_per_second": round(produced / run.wall, 4) if run.wall > 0 else None,
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


@dataclass(frozen=True)
class _Run:
    """What a finished run reports: ``samples`` per take, ``produced`` of them generated."""

    command: str
    settings: SamplingSettings
    sampler: WindowSampler
    samples: int
    produced: int
    passes: int
    seams: list[int]
    wall: float


@dataclass
class _Job:
    """What a run produces: ``total`` new samples, after ``lead`` samples of seed when included."""

    total: int
    lead: int = 0
    previous: torch.Tensor | None = None
    seed_audio: torch.Tensor | None = None
    source: _Source | None = None
    strength: float = 1.0
    keep_stages: bool = False
    loudness: float | None = None
    """The seed's RMS that the generated audio is scaled to (``match_loudness``), if any."""
    gain: torch.Tensor | None = None
    """Per take, the factor that scaling settled on (from the first ``_MATCH_SPAN`` samples)."""
    tone_reference: torch.Tensor | None = None
    """The seed audio whose long-term spectrum the generated audio is given (``match_tone``), if any."""
    tone: ToneMatch | None = None
    """Per take, the equaliser that tone matching settled on (from the first ``_MATCH_SPAN`` samples)."""

    @property
    def unsettled(self) -> bool:
        """Whether loudness or tone matching still waits for generated audio to settle on."""
        return (self.loudness is not None and self.gain is None) or (self.tone_reference is not None and self.tone is None)

    def settle(self, audio: torch.Tensor) -> None:
        """Fit the tone equaliser, then the loudness gain, to the first generated (batch, channels, samples)."""
        if self.tone_reference is not None:
            self.tone = ToneMatch.fit(self.tone_reference, audio, SAMPLE_RATE)
            audio = self.tone.apply(audio)
        if self.loudness is not None:
            self.gain = loudness_gain(audio, self.loudness)

    def master(self, audio: torch.Tensor) -> torch.Tensor:
        """A pass of generated audio with the settled tone and gain applied."""
        if self.tone is not None:
            audio = self.tone.apply(audio)
        return audio if self.gain is None else (audio * self.gain).clamp(-1.0, 1.0)


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


@dataclass(frozen=True)
class _MorphEnd:
    """One end of a morph: its primed sampler, its inverted noise and the inversion's error."""

    sampler: WindowSampler
    noise: torch.Tensor
    error: float


def _check_jumps(jumps: int) -> None:
    if not isinstance(jumps, int) or jumps < 0:
        raise JbdiffError(f"jumps (RePaint resamplings per step) must be a whole number >= 0, got {jumps}")


def _channels(audio: torch.Tensor, channels: int) -> torch.Tensor:
    """(batch, channels, samples) mixed down to mono, or a mono input duplicated to stereo."""
    if channels == 1:
        return audio.mean(dim=1, keepdim=True) if audio.shape[1] > 1 else audio
    return audio[:, :channels] if audio.shape[1] >= channels else audio.expand(-1, channels, -1)


class _Source(Protocol):
    """A remix's input (or a continuation's looped seed): ``length`` mono samples at the model's
    rate (a loop's period), handed out a piece at a time."""

    length: int

    def piece(self, start: int, stop: int) -> torch.Tensor:
        """(1, 1, stop - start) samples, zeros past the end."""
        ...


class _ArraySource:
    def __init__(self, samples: torch.Tensor) -> None:
        self.samples, self.length = samples, samples.shape[-1]

    def piece(self, start: int, stop: int) -> torch.Tensor:
        piece = self.samples[..., start:stop]
        return torch.nn.functional.pad(piece, (0, stop - start - piece.shape[-1]))


class _LoopSource:
    """``samples`` repeated without end (a continuation's ``seed_echo``)."""

    def __init__(self, samples: torch.Tensor) -> None:
        self.samples, self.length = samples, samples.shape[-1]

    def piece(self, start: int, stop: int) -> torch.Tensor:
        return self.samples[..., torch.arange(start, stop) % self.length]


class _FileSource:
    def __init__(self, reader: AudioStreamReader) -> None:
        self.reader, self.length = reader, reader.length

    def piece(self, start: int, stop: int) -> torch.Tensor:
        return torch.from_numpy(self.reader.read(start, stop))[None]


def _seed_loudness(seed: torch.Tensor) -> float | None:
    """The RMS of the seed's last 10 seconds, all channels (None for a silent seed: nothing to match)."""
    rms = seed[..., -_MATCH_SPAN:].float().square().mean().sqrt().item()
    return rms if rms > 1e-4 else None


def _emit(sink: Sink, audio: torch.Tensor) -> None:
    piece = audio.detach().cpu().numpy()
    for take in range(piece.shape[0]):
        sink(take, piece[take])


_MATCH_SPAN = 10 * SAMPLE_RATE
"""How much generated audio (or all, if less) sets ``match_loudness``'s gain and ``match_tone``'s
equaliser, and how much of the seed's end they match; it is held until then."""

_ECHO_SPAN = 10 * SAMPLE_RATE
"""How much of the seed's end ``seed_echo`` loops."""

_STAGING_FACTOR = {".wav": 1.0, ".flac": 1.75, ".ogg": 1.1}
"""Disk space of a streamed output per byte of float32 WAV: the staging WAV plus the file made from it."""


def _check_memory(needed: int) -> None:
    """Refuse audio kept in memory that would not fit the memory this machine has free."""
    try:  # MemAvailable counts the page cache the kernel would give back; free pages alone do not
        meminfo = Path("/proc/meminfo").read_text()
        free = next(int(line.split()[1]) * 1024 for line in meminfo.splitlines() if line.startswith("MemAvailable:"))
    except (OSError, StopIteration, ValueError):
        return
    if needed > free:
        raise JbdiffError(
            f"the audio asked for needs about {needed / 1e9:.1f} GB of memory but {free / 1e9:.1f} GB is free; "
            "write it to a file instead (out=...), which streams it"
        )


def run_outputs(out: Path, batch: int) -> list[Path]:
    """Every file a run streamed to ``out`` writes: each take's audio and spectrogram, and the manifest."""
    takes = _take_paths(out, batch)
    return [*takes, *(p.with_suffix(".png") for p in takes), out.with_suffix(".json")]


def _take_paths(out: Path, batch: int) -> list[Path]:
    if batch == 1:
        return [out]
    return [out.with_name(f"{out.stem}_take{i + 1}{out.suffix}") for i in range(batch)]
