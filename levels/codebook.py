"""EMA vector-quantisation codebook with restarts of dead codes (the Jukebox bottleneck).

State-dict layout: one persistent buffer ``k`` (bins, width) per level, as in OpenAI's
published checkpoints. The EMA statistics (``k_sum``, ``k_elem``) are non-persistent buffers;
training checkpoints save them separately (``ema_state`` / ``load_ema_state``).
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


class EMACodebook(nn.Module):
    """One level's codebook: nearest-neighbour quantisation, EMA updates, dead-code restarts."""

    def __init__(self, bins: int, width: int, mu: float = 0.99, threshold: float = 1.0) -> None:
        super().__init__()
        self.bins, self.width, self.mu, self.threshold = bins, width, mu, threshold
        self.register_buffer("k", torch.zeros(bins, width))
        self.register_buffer("k_sum", torch.zeros(bins, width), persistent=False)
        self.register_buffer("k_elem", torch.zeros(bins), persistent=False)
        self.register_buffer("initialised", torch.tensor(False), persistent=False)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # type: ignore[no-untyped-def]
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        if prefix + "k" in state_dict:
            self.restore_ema()

    def restore_ema(self) -> None:
        """Restart EMA statistics from the current codebook, each code counted once."""
        self.k_sum.copy_(self.k)
        self.k_elem.fill_(1.0)
        self.initialised.fill_(True)

    def ema_state(self) -> dict[str, torch.Tensor]:
        """The EMA statistics that a training checkpoint must keep to resume exactly."""
        return {"k_sum": self.k_sum.clone(), "k_elem": self.k_elem.clone(), "initialised": self.initialised.clone()}

    def load_ema_state(self, state: dict[str, torch.Tensor]) -> None:
        """Restore what ``ema_state`` returned."""
        for name, value in state.items():
            getattr(self, name).copy_(value)

    def _random_vectors(self, x: torch.Tensor) -> torch.Tensor:
        """``bins`` vectors drawn from ``x`` (tiled with tiny noise when there are too few)."""
        n, width = x.shape
        if n < self.bins:
            x = x.repeat((self.bins + n - 1) // n, 1)
            x = x + torch.randn_like(x) * (0.01 / math.sqrt(width))
        picked = x[torch.randperm(x.shape[0], device=x.device)[: self.bins]].contiguous()
        if _distributed():
            dist.broadcast(picked, 0)
        return picked

    def quantise(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Nearest code for each row of ``x`` (N, width): (indices, mean squared distance)."""
        # The expanded form in float32, exactly as the published model computes it, so codes match
        # OpenAI's bit for bit; codes closer than ~1e-6 in squared distance count as ties.
        k = self.k.float()
        x = x.float()
        distance = x.pow(2).sum(-1, keepdim=True) - 2 * x @ k.t() + k.pow(2).sum(-1)[None]
        min_distance, codes = distance.min(dim=-1)
        return codes, min_distance.mean()

    def dequantise(self, codes: torch.Tensor) -> torch.Tensor:
        """Codebook vectors for ``codes`` (any shape) -> (*shape, width)."""
        return F.embedding(codes, self.k)

    @staticmethod
    def _flatten(x: torch.Tensor) -> torch.Tensor:
        return x.permute(0, 2, 1).reshape(-1, x.shape[1])

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Encoder output (B, width, T) -> codes (B, T)."""
        codes, _ = self.quantise(self._flatten(x))
        return codes.view(x.shape[0], x.shape[2])

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes (B, T) -> codebook vectors (B, width, T)."""
        return self.dequantise(codes).permute(0, 2, 1).contiguous()

    @torch.no_grad()
    def _update(self, x: torch.Tensor, codes: torch.Tensor) -> dict[str, torch.Tensor]:
        onehot = torch.zeros(self.bins, x.shape[0], device=x.device, dtype=x.dtype)
        onehot.scatter_(0, codes.view(1, -1), 1.0)
        batch_sum = onehot @ x
        batch_elem = onehot.sum(-1)
        restarts = self._random_vectors(x)
        if _distributed():
            dist.all_reduce(batch_sum)
            dist.all_reduce(batch_elem)
        old_k = self.k.clone()
        self.k_sum.mul_(self.mu).add_(batch_sum, alpha=1 - self.mu)
        self.k_elem.mul_(self.mu).add_(batch_elem, alpha=1 - self.mu)
        used = (self.k_elem >= self.threshold).float()[:, None]
        self.k.copy_(used * self.k_sum / self.k_elem.clamp_min(1e-12)[:, None] + (1 - used) * restarts)
        prob = batch_elem / batch_elem.sum()
        return {
            "entropy": -(prob * torch.log(prob + 1e-8)).sum(),
            "used_curr": (batch_elem >= self.threshold).sum().float(),
            "usage": used.sum(),
            "dk": torch.linalg.norm(self.k - old_k) / math.sqrt(self.k.numel()),
        }

    def forward(self, x: torch.Tensor, update: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """Quantise (B, width, T) with a straight-through gradient.

        Returns (codes (B, T), quantised (B, width, T), commit loss, metrics). With ``update``,
        the codebook is initialised from the batch on first use and then EMA-updated.
        """
        batch, width, length = x.shape
        flat = self._flatten(x).float()
        if update and not bool(self.initialised):
            with torch.no_grad():
                self.k.copy_(self._random_vectors(flat.detach()))
                self.restore_ema()
        codes, fit = self.quantise(flat)
        quantised = self.dequantise(codes)
        metrics = self._update(flat, codes) if update else {}
        metrics["fit"] = fit
        commit = (quantised.detach() - flat).pow(2).mean()
        quantised = flat + (quantised - flat).detach()
        quantised = quantised.view(batch, length, width).permute(0, 2, 1).contiguous().to(x.dtype)
        return codes.view(batch, length), quantised, commit, metrics


class Bottleneck(nn.Module):
    """One ``EMACodebook`` per level, in ``level_blocks`` as in the Jukebox layout."""

    def __init__(self, bins: int, width: int, mu: float, levels: int) -> None:
        super().__init__()
        self.level_blocks = nn.ModuleList(EMACodebook(bins, width, mu) for _ in range(levels))
