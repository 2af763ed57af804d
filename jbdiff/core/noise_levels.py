"""Where training spends its noise levels: the distribution sigma is drawn from, and the loss weight.

``uniform`` draws sigma in [0, 1] (audio-diffusion-pytorch's default). ``logit-normal`` draws
sigma = sigmoid(mean + std * z), z ~ N(0, 1): with ``mean`` > 0 it trains the high-noise
regime, where a window's musical content is decided, more often than the nearly clean one.

``weighting`` scales each item's squared velocity error: ``v`` leaves it as it is; ``x0``
multiplies it by beta^2 = sin^2(sigma pi / 2), which makes it the squared error of the
predicted clean signal, so nearly clean items weigh far less than with ``v`` (there the
velocity error is the clean-signal error times 1 + SNR).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

DISTRIBUTIONS = ("uniform", "logit-normal")
WEIGHTINGS = ("v", "x0")


@dataclass(frozen=True)
class NoiseLevels:
    """The training distribution of sigma (v-diffusion noise level in [0, 1])."""

    distribution: str = "uniform"
    mean: float = 0.0
    std: float = 1.0
    weighting: str = "v"

    def __post_init__(self) -> None:
        if self.distribution not in DISTRIBUTIONS:
            raise ValueError(f"unknown noise-level distribution '{self.distribution}'; use one of {', '.join(DISTRIBUTIONS)}")
        if self.std <= 0:
            raise ValueError(f"std must be positive, got {self.std}")
        if self.weighting not in WEIGHTINGS:
            raise ValueError(f"unknown loss weighting '{self.weighting}'; use one of {', '.join(WEIGHTINGS)}")

    def weight(self, sigma: torch.Tensor) -> torch.Tensor | None:
        """Per-item loss weights for noise levels ``sigma`` (None: all equal)."""
        if self.weighting == "v":
            return None
        return torch.sin(sigma * (math.pi / 2)) ** 2

    def draw(self, n: int, *, device: torch.device | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` noise levels in [0, 1] (float32)."""
        if self.distribution == "uniform":
            return torch.rand(n, device=device, generator=generator)
        z = torch.randn(n, device=device, generator=generator)
        return torch.sigmoid(self.mean + self.std * z)
