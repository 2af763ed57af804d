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
    weight: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    **net_kwargs: Any,
) -> torch.Tensor:
    """Mean squared error of the predicted velocity (each item's scaled by ``weight``, if given).

    ``start`` replaces the Gaussian noise (residual denoising); ``sigma`` defaults to
    uniform draws in [0, 1] per item; every random draw uses ``generator``.
    """
    if sigma is None:
        sigma = torch.rand(x.shape[0], device=x.device, generator=generator)
    noise = start if start is not None else torch.randn(x.shape, device=x.device, dtype=x.dtype, generator=generator)
    alpha, beta = (_expand(t, x) for t in alpha_beta(sigma))
    noisy = alpha * x + beta * noise
    target = alpha * noise - beta * x
    if weight is None:
        return F.mse_loss(net(noisy, sigma, **net_kwargs), target)
    per_item = (net(noisy, sigma, **net_kwargs) - target).pow(2).flatten(1).mean(1)
    return (per_item * weight).mean()


def add_noise(x: torch.Tensor, noise: torch.Tensor, sigma: float | torch.Tensor) -> torch.Tensor:
    """x at noise level ``sigma``: alpha * x + beta * noise."""
    alpha, beta = alpha_beta(torch.as_tensor(sigma, dtype=torch.float32, device=x.device))
    return alpha * x + beta * noise


def bin_sigmas(bins: int) -> torch.Tensor:
    """The centres of ``bins`` equal-width noise-level bins in [0, 1]."""
    return (torch.arange(bins, dtype=torch.float32) + 0.5) / bins


@torch.no_grad()
def noise_level_errors(net: VNetwork, x: torch.Tensor, noise: torch.Tensor, trivial: torch.Tensor, bins: int, **net_kwargs: Any) -> dict[str, Any]:
    """Errors of ``net`` on clean ``x`` noised with the fixed ``noise`` at each noise-level bin's centre.

    Returns ``loss`` (the v-objective's squared error averaged over the bins, as uniform noise
    levels would weight it) and ``bins``: per bin ``sigma``, ``v_mse``, ``x_rmse`` (the
    predicted clean signal's error) and ``zero_rmse``, the RMS of ``trivial``: the error of the
    predictor a model must beat to have learned anything (``x`` itself for "always zero").
    """
    zero_rmse = float(trivial.pow(2).mean().sqrt())
    rows = []
    for sigma in bin_sigmas(bins).tolist():
        alpha, beta = alpha_beta(torch.tensor(sigma))
        noisy = alpha * x + beta * noise
        v = net(noisy, torch.full((x.shape[0],), sigma, device=x.device), **net_kwargs)
        x_hat = alpha * noisy - beta * v
        rows.append(
            {
                "sigma": round(sigma, 4),
                "v_mse": float((v - (alpha * noise - beta * x)).pow(2).mean()),
                "x_rmse": float((x_hat - x).pow(2).mean().sqrt()),
                "zero_rmse": zero_rmse,
            }
        )
    return {"loss": sum(float(row["v_mse"]) for row in rows) / len(rows), "bins": rows}
