"""Editing a recording: the region to regenerate, the passes that cover it, what each keeps.

An edit regenerates the samples ``[start, end)`` of an input. The region is widened to the
coarsest latent grid; a *span* of whole passes covers it plus its fades and some known
material on both sides (clamped at the file's start). Sampling the span, every stage keeps
the input's own latents (or, at the Dance stage, its audio) outside the region and generates
inside it (:class:`jbdiff.window_sampler.Known`); the context before the span is the input.
The result is spliced into the input with equal-power fades at the region's two ends, inside
it (:func:`jbdiff.core.crossfade.splice`), so that outside ``[start, end)`` the output *is*
the input; the fades also hide the step, inside the generated audio, from generated to kept
latents.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from jbdiff.core.audio import SAMPLE_RATE
from jbdiff.core.errors import JbdiffError
from jbdiff.window_sampler import Known, WindowSampler

DEFAULT_FADE_SECONDS = 0.05


@dataclass(frozen=True)
class Region:
    """Samples ``[start, end)`` to regenerate, with ``fade`` samples of crossfade at each end, inside it."""

    start: int
    end: int
    fade: int

    @classmethod
    def from_seconds(cls, start: float, end: float, fade: float | None, length: int, frame: int, what: str) -> Region:
        """Check a region given in seconds against an input of ``length`` samples.

        ``frame`` is the coarsest latent frame in samples (the shortest region); ``fade``
        None means the default (at most half the region).
        """
        seconds = length / SAMPLE_RATE
        if not (math.isfinite(start) and math.isfinite(end)):
            raise JbdiffError(f"{what}: the region's start and end must be numbers, got {start} and {end}")
        if start < 0 or end > seconds + 0.5 / SAMPLE_RATE:
            raise JbdiffError(f"{what}: the region {start:g}-{end:g} s lies outside the file (0-{seconds:.3f} s)")
        if end <= start:
            raise JbdiffError(f"{what}: the region's end ({end:g} s) must come after its start ({start:g} s)")
        first, last = round(start * SAMPLE_RATE), min(length, round(end * SAMPLE_RATE))
        if last - first < frame:
            raise JbdiffError(
                f"{what}: the region is {last - first} samples long, shorter than one coarsest latent frame ({frame} samples)"
            )
        if fade is None:
            fade = min(DEFAULT_FADE_SECONDS, (last - first) / 2 / SAMPLE_RATE)
        if not (math.isfinite(fade) and fade >= 0):
            raise JbdiffError(f"{what}: the fade must be a non-negative number of seconds, got {fade}")
        fade_samples = round(fade * SAMPLE_RATE)
        if 2 * fade_samples > last - first:
            raise JbdiffError(f"{what}: the fades (2 x {fade:g} s) are longer than the region ({(last - first) / SAMPLE_RATE:g} s)")
        return cls(first, last, fade_samples)

    def seconds(self) -> dict[str, float]:
        """The region for a manifest."""
        return {"start": self.start / SAMPLE_RATE, "end": self.end / SAMPLE_RATE, "fade": self.fade / SAMPLE_RATE}


@dataclass(frozen=True)
class Span:
    """``passes`` whole passes from sample ``begin`` of the input that regenerate ``region``."""

    region: Region
    begin: int
    passes: int
    chunk: int

    @classmethod
    def plan(cls, region: Region, sampler: WindowSampler) -> Span:
        """The passes around ``region``: at least a quarter pass of known material before
        and after it (plus the fades), the slack shared out, never before the file's start."""
        grain, chunk = max(sampler.hops), sampler.chunk
        low, high = region.start // grain * grain, -(-region.end // grain) * grain
        margin = -(-(region.fade + chunk // 4) // grain) * grain
        passes = max(1, -(-(high - low + 2 * margin) // chunk))
        lead = (passes * chunk - (high - low)) // 2 // grain * grain
        return cls(region, max(0, low - lead), passes, chunk)

    def _kept(self, first: int, count: int, step: int, length: int, device: torch.device) -> torch.Tensor:
        """(1, 1, count) True where the stretch of ``step`` samples from ``first + i * step`` is known input."""
        starts = first + step * torch.arange(count, device=device)
        outside = (starts + step <= self.region.start) | (starts >= self.region.end)
        return (outside & (starts >= 0) & (starts + step <= length))[None, None]

    def known(self, index: int, sampler: WindowSampler, mono: torch.Tensor, stereo: torch.Tensor | None, jumps: int = 0) -> Known:
        """What pass ``index`` keeps: the input's latents at every level the sampler runs
        (encoded with the codec's margins on both sides) and, for the Dance stage, its
        stereo audio from ``sampler.overlap`` samples before the pass.

        ``mono`` is (batch or 1, 1, samples) and ``stereo`` (batch or 1, 2, samples) on the
        sampler's device, both the whole input (unaligned).
        """
        length = mono.shape[-1]
        first = self.begin + index * self.chunk
        latents, masks = {}, {}
        for level in sampler.levels:
            hop = sampler.hops[level]
            latents[level] = pass_latents(sampler, mono, first, level)
            masks[level] = self._kept(first, self.chunk // hop, hop, length, mono.device)
        audio = mask = None
        if stereo is not None:
            audio = _stretch(stereo, first - sampler.overlap, sampler.overlap + self.chunk)
            mask = self._kept(first - sampler.overlap, sampler.overlap + self.chunk, 1, length, stereo.device)
        return Known(latents, masks, audio, mask, jumps)


def pass_latents(sampler: WindowSampler, mono: torch.Tensor, first: int, level: int) -> torch.Tensor:
    """``level``'s latents of the pass of ``mono`` (batch or 1, 1, samples) from sample ``first``,
    encoded with the codec's margin on both sides (silence beyond the audio's ends)."""
    hop, margin = sampler.hops[level], sampler.encode_margin[level]
    piece = _stretch(mono, first - margin, sampler.chunk + 2 * margin)
    frames = sampler.stages.codec.encode(piece, [level])[level]
    return frames[..., margin // hop : (margin + sampler.chunk) // hop].float()


def _stretch(audio: torch.Tensor, first: int, count: int) -> torch.Tensor:
    """``audio[..., first : first + count]``, zero-padded where that reaches outside it."""
    lo, hi = max(0, first), min(audio.shape[-1], first + count)
    piece = audio[..., lo:hi] if hi > lo else audio[..., :0]
    return F.pad(piece, (lo - first, count - (lo - first) - piece.shape[-1]))
