"""Training windows read from pre-encoded latent shards (no VQ-VAE pass per step).

Each item is a random-offset window of codes at one level, the ``context_mult`` windows
before it (``-1`` where the song has not started yet), and for residual levels the cached
start codes (the level above decoded and re-encoded here).
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import IterableDataset

from jbdiff.core.audio import SAMPLE_RATE
from jbdiff.core.data_seeding import stream_rng
from jbdiff.core.errors import JbdiffError
from levels.latent_shards import LatentShards

PAD_CODE = -1


class LatentWindows(IterableDataset):  # type: ignore[type-arg]
    """Endless random windows: dicts with ``codes`` (W,), ``context`` (C*W,), maybe ``start`` (W,)."""

    def __init__(
        self, shards: LatentShards, level: int, window: int, context_mult: int, *, residual: bool, seed: int = 0, stream: int = 0
    ) -> None:
        super().__init__()
        self.shards, self.level, self.window, self.context_mult = shards, level, window, context_mult
        self.residual, self.seed, self.stream = residual, seed, stream
        frames = np.array([entry.frames[level] for entry in shards.entries])
        self.usable = np.flatnonzero(frames >= window)
        if not len(self.usable):
            raise JbdiffError(
                f"{shards.root}: no file has {window} frames at level {level} "
                f"({window * shards.hops[level] / SAMPLE_RATE:.1f} s); use longer audio or a smaller window"
            )
        weights = frames[self.usable] - window + 1
        self.weights = weights / weights.sum()

    def item(self, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        """One random window."""
        index = int(self.usable[rng.choice(len(self.usable), p=self.weights)])
        frames = self.shards.entries[index].frames[self.level]
        start = int(rng.integers(0, frames - self.window + 1))
        out = {"codes": self.shards.crop(index, self.level, start, self.window)}
        context_len = self.context_mult * self.window
        if context_len:
            context = torch.full((context_len,), PAD_CODE, dtype=torch.long)
            available = min(start, context_len)
            if available:
                context[context_len - available :] = self.shards.crop(index, self.level, start - available, available)
            out["context"] = context
        if self.residual:
            out["start"] = self.shards.crop(index, self.level, start, self.window, upsampler_start=True)
        return out

    def __iter__(self):  # type: ignore[no-untyped-def]
        rng = stream_rng(self.seed, self.stream)
        while True:
            yield self.item(rng)
