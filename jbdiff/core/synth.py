"""Synthesised music-like audio for tests, demos and benchmarks (no downloads, no data sets)."""

from __future__ import annotations

import numpy as np

from jbdiff.core.audio import SAMPLE_RATE

_CHORD = (1.0, 1.26, 1.5, 2.0)


def synth_music(seconds: float, sample_rate: int = SAMPLE_RATE, seed: int = 0, beat: float = 0.5) -> np.ndarray:
    """A mono chord progression with decaying notes, a kick on every beat and light noise.

    Returns float32 ``(1, samples)`` peaking around 0.5; the same seed gives the same audio.
    """
    rng = np.random.default_rng(seed)
    n = round(seconds * sample_rate)
    out = np.zeros(n)
    step = int(beat * sample_rate)
    local = np.arange(step) / sample_rate
    env = np.exp(-3.0 * local)
    kick = np.sin(2 * np.pi * (50 + 60 * np.exp(-30 * local)) * local) * np.exp(-18 * local)
    for start in range(0, n, step):
        root = 110.0 * 2 ** (rng.integers(0, 12) / 12)
        note = sum(np.sin(2 * np.pi * root * ratio * local) for ratio in _CHORD) / len(_CHORD)
        seg = slice(start, min(n, start + step))
        length = seg.stop - seg.start
        out[seg] += (0.8 * env * note + 0.5 * kick)[:length]
    out += 0.01 * rng.standard_normal(n)
    return (0.5 * out / max(1e-9, np.abs(out).max()))[None].astype(np.float32)
