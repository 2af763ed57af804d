"""Where training spends its noise levels: the distribution sigma is drawn from per item.

``uniform`` draws sigma in [0, 1] (audio-diffusion-pytorch's default). ``logit-normal`` draws
sigma = sigmoid(mean + std * z), z ~ N(0, 1): with ``mean`` > 0 it trains the high-noise
regime, where a window's musical content is decided, more often than the nearly clean one.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

DISTRIBUTIONS = ("uniform", "logit-normal")


@dataclass(frozen=True)
class NoiseLevels:
    """The training distribution of sigma (v-diffusion noise level in [0, 1])."""

    distribution: str = "uniform"
    mean: float = 0.0
    std: float = 1.0

    def __post_init__(self) -> None:
        if self.distribution not in DISTRIBUTIONS:
            raise ValueError(f"unknown noise-level distribution '{self.distribution}'; use one of {', '.join(DISTRIBUTIONS)}")
        if self.std <= 0:
            raise ValueError(f"std must be positive, got {self.std}")

    def draw(self, n: int, *, device: torch.device | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` noise levels in [0, 1] (float32)."""
        if self.distribution == "uniform":
            return torch.rand(n, device=device, generator=generator)
        z = torch.randn(n, device=device, generator=generator)
        return torch.sigmoid(self.mean + self.std * z)
