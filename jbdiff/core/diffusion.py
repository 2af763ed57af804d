"""The v-objective on sigma in [0, 1]: alpha = cos(sigma*pi/2), beta = sin(sigma*pi/2).

A network predicts v = alpha * noise - beta * x from x_sigma = alpha * x + beta * noise.
The "noise" may be a given start tensor instead of Gaussian noise: the residual upsamplers
learn to go from the level above (decoded and re-encoded here) to this level's latents.
"""

from __future__ import annotations

import math
from typing import Any, Protocol

import torch
import torch.nn.functional as F


class VNetwork(Protocol):
    """A denoiser: ``net(x_sigma, sigma (batch,), **kwargs) -> v`` with x's shape."""

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, **kwargs: Any) -> torch.Tensor: ...


def alpha_beta(sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(alpha, beta) = (cos, sin) of sigma * pi / 2."""
    angle = sigma * (math.pi / 2)
    return torch.cos(angle), torch.sin(angle)


def _expand(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return t.view(-1, *([1] * (like.dim() - 1)))


def v_loss(
    net: VNetwork,
    x: torch.Tensor,
    *,
    start: torch.Tensor | None = None,
    sigma: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    **net_kwargs: Any,
) -> torch.Tensor:
    """Mean squared error of the predicted velocity.

    ``start`` replaces the Gaussian noise (residual denoising); ``sigma`` defaults to
    uniform draws in [0, 1] per item; every random draw uses ``generator``.
    """
    if sigma is None:
        sigma = torch.rand(x.shape[0], device=x.device, generator=generator)
    noise = start if start is not None else torch.randn(x.shape, device=x.device, dtype=x.dtype, generator=generator)
    alpha, beta = (_expand(t, x) for t in alpha_beta(sigma))
    noisy = alpha * x + beta * noise
    target = alpha * noise - beta * x
    return F.mse_loss(net(noisy, sigma, **net_kwargs), target)


def add_noise(x: torch.Tensor, noise: torch.Tensor, sigma: float | torch.Tensor) -> torch.Tensor:
    """x at noise level ``sigma``: alpha * x + beta * noise."""
    alpha, beta = alpha_beta(torch.as_tensor(sigma, dtype=torch.float32, device=x.device))
    return alpha * x + beta * noise
