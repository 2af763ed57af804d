"""Starting noise for consecutive windows (random, constant, region or walk) and slerp between noises.

``constant`` repeats one "home" noise; ``region`` draws each window near home
(sqrt(1 - s^2) * home + s * fresh); ``walk`` steps from the previous window the same way, so
it drifts. ``s`` is the step size. Every window keeps unit variance.
"""

from __future__ import annotations

import math

import torch

NOISE_STYLES = ("random", "constant", "region", "walk")


class WindowNoise:
    """An endless source of per-window noise tensors of one shape, drawn from ``generator``."""

    def __init__(
        self,
        style: str,
        shape: tuple[int, ...],
        generator: torch.Generator,
        step_size: float = 0.05,
        device: torch.device | None = None,
    ) -> None:
        if style not in NOISE_STYLES:
            raise ValueError(f"unknown noise style '{style}'; use one of {', '.join(NOISE_STYLES)}")
        if not 0.0 <= step_size <= 1.0:
            raise ValueError(f"noise step size must be in [0, 1], got {step_size}")
        self.style, self.shape, self.generator, self.step = style, shape, generator, step_size
        self.device = device
        self._home: torch.Tensor | None = None
        self._last: torch.Tensor | None = None

    def _fresh(self) -> torch.Tensor:
        return torch.randn(self.shape, generator=self.generator, device=self.generator.device).to(self.device)

    def next(self) -> torch.Tensor:
        """The noise for the next window."""
        if self.style == "random":
            return self._fresh()
        if self._home is None:
            self._home = self._last = self._fresh()
            return self._home
        keep = math.sqrt(1.0 - self.step**2)
        if self.style == "constant":
            return self._home
        base = self._home if self.style == "region" else self._last
        assert base is not None
        self._last = keep * base + self.step * self._fresh()
        return self._last


def slerp(a: torch.Tensor, b: torch.Tensor, t: float) -> torch.Tensor:
    """Spherical interpolation from ``a`` (t = 0) to ``b`` (t = 1), per batch item.

    Gaussian noises keep their norm along the way (a linear blend would shrink it);
    nearly parallel tensors fall back to the linear blend.
    """
    flat_a, flat_b = a.flatten(1), b.flatten(1)
    cosine = (flat_a * flat_b).sum(1) / (flat_a.norm(dim=1) * flat_b.norm(dim=1)).clamp_min(1e-12)
    angle = torch.arccos(cosine.clamp(-1.0, 1.0))
    sine = torch.sin(angle)
    safe = sine > 1e-6
    weight_a = torch.where(safe, torch.sin((1 - t) * angle) / sine.clamp_min(1e-6), torch.full_like(sine, 1 - t))
    weight_b = torch.where(safe, torch.sin(t * angle) / sine.clamp_min(1e-6), torch.full_like(sine, t))
    shape = (-1, *([1] * (a.dim() - 1)))
    return weight_a.view(shape) * a + weight_b.view(shape) * b
