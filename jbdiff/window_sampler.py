"""Sampling a piece one pass at a time through every stage: level 2, 1, 0, then Dance.

A pass covers ``window_multiplier`` base windows of the coarsest level that runs. At each
level the pass's latents are denoised in one call while the UNet cross-attends to that
level's latents before the pass (the seed's, then the ones generated); the next level starts
from them decoded to audio and re-encoded. Only the context each level needs (plus the
codec's receptive field) is kept on the device, so memory does not grow with the piece.

Each pass returns its audio from ``overlap`` samples *before* its start, for the crossfade
with the pass before it (:class:`jbdiff.core.crossfade.Crossfader`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from jbdiff.bundle import Stages
from jbdiff.core.errors import JbdiffError
from jbdiff.core.noise import WindowNoise
from jbdiff.core.stages import DANCE_STAGE, stage_name
from jbdiff.sampling_settings import SamplingSettings
from levels.base_prior import generate_next_window
from levels.codec import decoder_radius, encoder_radius
from upsampler.dance_refiner import refine_stereo
from upsampler.residual import upsample_window


def _left_pad(x: torch.Tensor, length: int) -> torch.Tensor:
    """The last ``length`` entries of ``x`` along its last axis, zero-padded on the left."""
    x = x[..., max(0, x.shape[-1] - length) :]
    return F.pad(x, (length - x.shape[-1], 0))


@dataclass(frozen=True)
class Known:
    """What an edit keeps in one pass (inpainting): the rest of the pass is generated to fit it.

    ``latents[level]`` (batch or 1, channels, the pass's frames at that level) holds where
    ``masks[level]`` (1 or batch, 1, frames; True = keep) says; ``audio`` (batch or 1, 2,
    overlap + pass samples) and ``audio_mask`` do the same for the Dance stage, from
    ``overlap`` samples before the pass. ``jumps``: RePaint resamplings per step at the first level.
    """

    latents: dict[int, torch.Tensor] = field(default_factory=dict)
    masks: dict[int, torch.Tensor] = field(default_factory=dict)
    audio: torch.Tensor | None = None
    audio_mask: torch.Tensor | None = None
    jumps: int = 0

    def at(self, level: int, like: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """(known latents shaped like ``like``, mask) at ``level``; (None, None) when nothing is kept there."""
        if level not in self.latents:
            return None, None
        return self.latents[level].to(like).expand_as(like), self.masks[level].to(like.device)


class WindowSampler:
    """Runs the passes of one piece for a batch of takes; holds only each level's recent history.

    ``progress(stage)`` (an attribute; a no-op by default) is called once per network
    evaluation; ``timings`` accumulates the seconds spent per stage (``codec`` for decoding and
    re-encoding between levels). ``stage_audio(stage, audio)`` (an attribute; ``None`` by
    default) taps every stage of the same pass: it is called with each level's decoded audio
    and the Dance stage's output, each (batch, channels, overlap + chunk) like a pass's result,
    so that every stage's audio can be crossfaded into a piece of its own (a stage ladder).
    """

    def __init__(
        self,
        stages: Stages,
        settings: SamplingSettings,
        *,
        device: torch.device,
        dtype: torch.dtype,
    ) -> None:
        self.stages, self.settings, self.device, self.dtype = stages, settings, device, dtype
        self.levels = settings.latent_levels
        missing = [stage_name(level) for level in self.levels if level not in stages.denoisers]
        if DANCE_STAGE in settings.levels and stages.dance is None:
            missing.append(DANCE_STAGE)
        if missing:
            raise JbdiffError(f"the model bundle has no {', '.join(missing)} stage; leave it out of --levels")
        codec = stages.codec
        self.hops = codec.hops
        top = self.levels[0]
        self.chunk = settings.window_multiplier * stages.denoisers[top].cfg.window * self.hops[top]
        self.overlap = settings.crossfade_samples
        grain = max(self.hops)
        if self.chunk % grain:
            raise JbdiffError(f"a pass of {self.chunk} samples is not a multiple of the codec's coarsest hop {grain}")
        if self.chunk < 2 * self.overlap:
            raise JbdiffError(f"the crossfade ({self.overlap} samples) must be at most half a pass ({self.chunk} samples)")
        for level in self.levels:
            factor = stages.denoisers[level].net.config.total_factor
            if (self.chunk // self.hops[level]) % factor:
                raise JbdiffError(f"level {level}: a pass of {self.chunk // self.hops[level]} frames is not a multiple of its UNet's factor {factor}")
        self.decode_margin = {lv: math.ceil(decoder_radius(codec.cfg, lv) / self.hops[lv]) + 1 for lv in range(codec.levels)}
        self.encode_margin = {lv: math.ceil(encoder_radius(codec.cfg, lv) / grain) * grain for lv in range(codec.levels)}
        self.progress: Callable[[str], None] = lambda stage: None
        self.stage_audio: Callable[[str, torch.Tensor], None] | None = None
        self.timings = {name: 0.0 for name in (*settings.levels, "codec")}
        batch = settings.batch
        self.history = {lv: torch.zeros(batch, codec.cfg.emb_width, 0, device=device) for lv in self.levels}
        self.above = {lv: torch.zeros(batch, 1, 0, device=device) for lv in self.levels[1:]}
        self.mono_tail = torch.zeros(batch, 1, self.overlap, device=device)
        self.noise_generator = torch.Generator(device).manual_seed(settings.seed)
        self.dance_generator = torch.Generator(device).manual_seed(settings.seed + 1)
        self.noise = WindowNoise(
            settings.noise_style,
            (batch, codec.cfg.emb_width, self.chunk // self.hops[top]),
            self.noise_generator,
            settings.noise_step,
            device=device,
        )

    @property
    def channels(self) -> int:
        return 2 if self.stages.dance is not None and DANCE_STAGE in self.settings.levels else 1

    @property
    def prime_samples(self) -> int:
        """How much audio before the piece :meth:`prime` uses: its end, any earlier is ignored."""
        need = max(self._context(lv) + self.decode_margin[lv] for lv in self.levels) * max(self.hops)
        return need + self.encode_margin[0]

    def prime(self, audio: torch.Tensor) -> None:
        """Fill every level's history from audio (1 or batch, 1, samples) that precedes the piece (a seed).

        The audio must end on the coarsest latent grid (a whole number of coarsest hops).
        """
        codec = self.stages.codec
        if audio.shape[-1] % max(self.hops):
            raise ValueError(f"{audio.shape[-1]} samples of context is not a multiple of the coarsest hop {max(self.hops)}")
        audio = audio[..., -self.prime_samples :].to(self.device, torch.float32)
        started = self._tick()
        latents = codec.encode(audio, self.levels)
        self._tock("codec", started)
        batch = self.settings.batch
        for level in self.levels:
            self.history[level] = latents[level].expand(batch, -1, -1).float()
        for level in self.above:
            self.above[level] = _left_pad(audio, self.encode_margin[level]).expand(batch, -1, -1)
        self.mono_tail = _left_pad(audio, self.overlap).expand(batch, -1, -1)

    def mix(self, a: WindowSampler, b: WindowSampler, t: float) -> None:
        """Take as history the linear blend (1 - t) * a's + t * b's (both primed alike): for morphing."""
        for level in self.levels:
            self.history[level] = torch.lerp(a.history[level], b.history[level], t)
        for level in self.above:
            self.above[level] = torch.lerp(a.above[level], b.above[level], t)
        self.mono_tail = torch.lerp(a.mono_tail, b.mono_tail, t)

    def next_pass(
        self,
        init: torch.Tensor | None = None,
        strength: float = 1.0,
        *,
        known: Known | None = None,
        noise: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The audio (batch, channels, overlap + chunk) of the next pass.

        With ``init`` (the first level's latents of this stretch of an input, for remix) the
        first level re-noises it to ``strength`` and denoises; without, it generates, from
        ``noise`` when given (else the next of the noise style). ``known`` inpaints: every
        stage keeps what it holds and generates the rest.
        """
        known = known or Known()
        audio = None
        for index, level in enumerate(self.levels):
            model = self.stages.denoisers[level]
            stage = self.settings.stage(stage_name(level))
            context = self._context(level)
            previous = self.history[level][..., -context:].to(self.dtype) if context else None
            options = {"steps": stage.steps, "guidance": stage.guidance, "sampler": stage.sampler, "progress": self._counter(stage_name(level))}
            started = self._tick()
            if index == 0 and level == self.stages.codec.levels - 1:
                source = None if init is None else init.to(self.dtype)
                start_noise = (self.noise.next() if noise is None else noise.expand(self.settings.batch, -1, -1)).to(self.dtype)
                kept, mask = known.at(level, start_noise)
                z = generate_next_window(
                    model, previous, start_noise, init=source, init_strength=1.0 - strength, known=kept, known_mask=mask,
                    jumps=known.jumps, generator=self.noise_generator, **options,
                )
            else:
                if index == 0:
                    assert init is not None, "only a remix may start below the coarsest level"
                    start, init_strength = init.to(self.dtype), 1.0 - strength
                else:
                    assert audio is not None
                    start, init_strength = self._encode_new(level, audio, started).to(self.dtype), stage.init_strength
                    started = self._tick()
                kept, mask = known.at(level, start)
                z = upsample_window(model, start, previous, init_strength=init_strength, known=kept, known_mask=mask, **options)
            self._tock(stage_name(level), started)
            keep = self._context(level) + self.decode_margin[level] + math.ceil(self.overlap / self.hops[level])
            self.history[level] = torch.cat([self.history[level][..., -keep:], z.float()], dim=-1)
            crossfaded_here = index == len(self.levels) - 1 and self.channels == 1
            before = self.overlap if crossfaded_here or self.stage_audio is not None else 0
            audio = self._decode_new(level, before)
            if self.stage_audio is not None:
                self.stage_audio(stage_name(level), audio)
                audio = audio if crossfaded_here else audio[..., before:]
        assert audio is not None
        if self.channels == 1:
            return audio
        stereo = self._refine(audio, known)
        if self.stage_audio is not None:
            self.stage_audio(DANCE_STAGE, stereo)
        return stereo

    def _context(self, level: int) -> int:
        return self.stages.denoisers[level].cfg.context_length

    def _encode_new(self, level: int, audio: torch.Tensor, started: float) -> torch.Tensor:
        """This level's start latents for the pass from the level above's audio of the pass."""
        whole = torch.cat([self.above[level], audio], dim=-1)
        self.above[level] = whole[..., -self.encode_margin[level] :] if self.encode_margin[level] else whole[..., :0]
        latents = self.stages.codec.encode(whole, [level])[level]
        self._tock("codec", started)
        return latents[..., -(self.chunk // self.hops[level]) :]

    def _decode_new(self, level: int, before: int) -> torch.Tensor:
        """Mono audio of the pass's latents at ``level``, starting ``before`` samples early."""
        hop = self.hops[level]
        lead = math.ceil(before / hop)
        frames = self.chunk // hop + lead + self.decode_margin[level]
        started = self._tick()
        audio = self.stages.codec.decode(level, self.history[level][..., -frames:])
        self._tock("codec", started)
        return _left_pad(audio, self.chunk + before)  # silence before a piece's start, as the codec decodes it

    def _refine(self, mono: torch.Tensor, known: Known) -> torch.Tensor:
        """The Dance stage: stereo audio of the pass (and the overlap before it) from its mono audio."""
        assert self.stages.dance is not None
        stage = self.settings.stage(DANCE_STAGE)
        piece = torch.cat([self.mono_tail, mono], dim=-1)
        self.mono_tail = piece[..., piece.shape[-1] - self.overlap :]
        keep: dict[str, torch.Tensor] = {}
        if known.audio is not None and known.audio_mask is not None:
            keep = {"known": known.audio.to(self.device, self.dtype).expand(piece.shape[0], 2, -1), "known_mask": known.audio_mask.to(self.device)}
        started = self._tick()
        stereo = refine_stereo(
            self.stages.dance, piece.to(self.dtype), steps=stage.steps, init_strength=stage.init_strength,
            sampler=stage.sampler, generator=self.dance_generator, progress=self._counter(DANCE_STAGE), **keep,
        )
        self._tock(DANCE_STAGE, started)
        return stereo.float()

    def _counter(self, stage: str) -> Callable[[], None]:
        return lambda: self.progress(stage)

    def _tick(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    def _tock(self, stage: str, started: float) -> None:
        self.timings[stage] += self._tick() - started
