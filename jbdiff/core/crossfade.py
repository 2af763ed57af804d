"""Crossfades between consecutive windows of generated audio, as a stream, and splices.

Each window arrives covering ``overlap`` samples before its own start (the stretch the previous
window also covered); :class:`Crossfader` blends that stretch with the previous window's tail
and hands out finished audio, holding back only the newest ``overlap`` samples.
"""

from __future__ import annotations

import math

import torch

CROSSFADES = ("linear", "constant-power")


def fade_curves(style: str, length: int, device: torch.device | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(fade_out, fade_in) gains over ``length`` samples.

    ``linear`` gains sum to 1 (right for correlated signals); ``constant-power`` gains have
    squares summing to 1 (right for uncorrelated signals).
    """
    if style not in CROSSFADES:
        raise ValueError(f"unknown crossfade '{style}'; use one of {', '.join(CROSSFADES)}")
    ramp = (torch.arange(length, device=device, dtype=torch.float32) + 0.5) / max(length, 1)
    if style == "linear":
        return 1.0 - ramp, ramp
    return torch.cos(ramp * math.pi / 2), torch.sin(ramp * math.pi / 2)


class Crossfader:
    """Joins overlapping windows (batch, channels, samples) into one stream of finished audio.

    ``previous`` is the audio just before the first window (e.g. the seed's tail), which that
    window's head is blended into; without it the first window's head is dropped. ``total``
    caps how many samples are handed out after ``previous``.
    """

    def __init__(self, overlap: int, style: str = "constant-power", *, total: int, previous: torch.Tensor | None = None) -> None:
        if overlap < 0:
            raise ValueError(f"crossfade length must be >= 0 samples, got {overlap}")
        if previous is not None and previous.shape[-1] != overlap:
            raise ValueError(f"expected {overlap} samples before the first window, got {previous.shape[-1]}")
        self.overlap, self.remaining = overlap, total
        self.fade_out, self.fade_in = fade_curves(style, overlap)
        self._tail = previous
        self._blend_head = previous is not None

    def push(self, window: torch.Tensor) -> torch.Tensor:
        """Blend in the next window (its first ``overlap`` samples precede its start); return finished audio."""
        n = self.overlap
        if window.shape[-1] < 2 * n:
            raise ValueError(f"a window must be at least twice the crossfade ({2 * n} samples), got {window.shape[-1]}")
        head, body, tail = window[..., :n], window[..., n : window.shape[-1] - n], window[..., window.shape[-1] - n :]
        if self._blend_head and self._tail is not None:
            fade_out, fade_in = self.fade_out.to(window), self.fade_in.to(window)
            blended = self._tail.to(window) * fade_out + head * fade_in
            body = torch.cat([blended, body], dim=-1)
        self._tail, self._blend_head = tail, True
        return self._take(body)

    def flush(self) -> torch.Tensor:
        """The held-back tail of the last window (call once, after the last push)."""
        tail, self._tail = self._tail, None
        if tail is None:
            raise RuntimeError("nothing to flush: no window was pushed")
        return self._take(tail)

    def _take(self, audio: torch.Tensor) -> torch.Tensor:
        keep = min(self.remaining, audio.shape[-1])
        self.remaining -= keep
        return audio[..., :keep]


def splice(original: torch.Tensor, generated: torch.Tensor, fade_in: int, fade_out: int) -> torch.Tensor:
    """``generated`` set into ``original`` (same shape, (..., samples)) with equal-power fades.

    The first ``fade_in`` samples fade from the original to the generated audio, the last
    ``fade_out`` back; in between the result is ``generated``. Nothing outside is touched.
    """
    if original.shape != generated.shape:
        raise ValueError(f"cannot splice audio shaped {tuple(generated.shape)} into {tuple(original.shape)}")
    if fade_in + fade_out > original.shape[-1]:
        raise ValueError(f"fades of {fade_in} and {fade_out} samples do not fit in {original.shape[-1]}")
    out = generated.clone()
    length = out.shape[-1]
    if fade_in:
        leave, enter = fade_curves("constant-power", fade_in, original.device)
        out[..., :fade_in] = original[..., :fade_in] * leave + generated[..., :fade_in] * enter
    if fade_out:
        leave, enter = fade_curves("constant-power", fade_out, original.device)
        tail = slice(length - fade_out, length)
        out[..., tail] = generated[..., tail] * leave + original[..., tail] * enter
    return out
