"""Crossfade curves and the streaming crossfader that joins consecutive windows."""

from __future__ import annotations

import pytest
import torch

from jbdiff.core.crossfade import Crossfader, fade_curves


@pytest.mark.parametrize("style", ["linear", "constant-power"])
def test_curves_keep_level(style: str) -> None:
    fade_out, fade_in = fade_curves(style, 64)
    assert fade_out[0] > 0.95 and fade_in[0] < 0.05 and fade_out[-1] < 0.05 and fade_in[-1] > 0.95
    if style == "linear":
        assert torch.allclose(fade_out + fade_in, torch.ones(64))
    else:
        assert torch.allclose(fade_out**2 + fade_in**2, torch.ones(64))
    with pytest.raises(ValueError, match="unknown crossfade"):
        fade_curves("cubic", 8)


def _windows(signal: torch.Tensor, chunk: int, overlap: int) -> list[torch.Tensor]:
    """Windows of ``signal`` as the sampler makes them: each starts ``overlap`` before its chunk."""
    padded = torch.nn.functional.pad(signal, (overlap, chunk))
    return [padded[..., start : start + overlap + chunk] for start in range(0, signal.shape[-1], chunk)]


def test_a_linear_crossfade_of_one_continuous_signal_rebuilds_it_exactly() -> None:
    signal = torch.randn(2, 1, 1000)
    fader = Crossfader(16, "linear", total=1000)
    pieces = [fader.push(w) for w in _windows(signal, 128, 16)] + [fader.flush()]
    joined = torch.cat(pieces, dim=-1)
    assert joined.shape == signal.shape
    assert torch.allclose(joined, signal, atol=1e-6)


def test_previous_audio_is_blended_into_the_first_window_head() -> None:
    previous = torch.ones(1, 1, 8)
    fader = Crossfader(8, "linear", total=8 + 20, previous=previous)
    window = torch.zeros(1, 1, 8 + 20)
    out = torch.cat([fader.push(window), fader.flush()], dim=-1)
    assert out.shape[-1] == 28
    head = out[0, 0, :8]
    assert torch.all(head[1:] < head[:-1]) and 0 < head[-1] < head[0] < 1  # fades from the previous audio
    assert torch.all(out[0, 0, 8:] == 0)


def test_without_previous_audio_the_head_is_dropped_and_total_caps_the_output() -> None:
    fader = Crossfader(4, total=10)
    first = torch.arange(24.0).reshape(1, 1, 24)
    out = torch.cat([fader.push(first), fader.flush()], dim=-1)
    assert torch.equal(out[0, 0], torch.arange(4.0, 14.0))
    with pytest.raises(ValueError, match="twice the crossfade"):
        Crossfader(8, total=10).push(torch.zeros(1, 1, 10))
