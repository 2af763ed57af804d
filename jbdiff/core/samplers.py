"""Samplers for v-objective models: the reference DDIM-style v-sampler and DPM-Solver++(2M).

Both walk a linear sigma schedule from 1 to 0 in ``steps`` steps. Starting from an init at
strength ``s`` skips the first ``round(s * steps)`` steps: the init is noised to the sigma
where sampling resumes (s = 0: pure noise, the init is ignored; s = 1: the init is returned).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from jbdiff.core.diffusion import VNetwork, add_noise, alpha_beta

SAMPLERS = ("v", "dpm")


def schedule(steps: int, init_strength: float = 0.0, device: torch.device | None = None) -> torch.Tensor:
    """The sigmas still to visit: ``linspace(1, 0, steps + 1)`` minus the skipped head."""
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    if not 0.0 <= init_strength <= 1.0:
        raise ValueError(f"init strength must be in [0, 1], got {init_strength}")
    sigmas = torch.linspace(1.0, 0.0, steps + 1, device=device)
    return sigmas[round(init_strength * steps) :]


def _denoise(net: VNetwork, x: torch.Tensor, sigma: torch.Tensor, kwargs: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
    """(predicted clean x, predicted noise) at ``sigma``."""
    v = net(x, sigma.expand(x.shape[0]), **kwargs)
    alpha, beta = alpha_beta(sigma)
    return alpha * x - beta * v, beta * x + alpha * v


def _v_sampler(net: VNetwork, x: torch.Tensor, sigmas: torch.Tensor, kwargs: dict[str, Any], tick: Callable[[], None]) -> torch.Tensor:
    for i in range(len(sigmas) - 1):
        x0, eps = _denoise(net, x, sigmas[i], kwargs)
        alpha, beta = alpha_beta(sigmas[i + 1])
        x = alpha * x0 + beta * eps
        tick()
    return x


def _log_snr(sigma: torch.Tensor) -> torch.Tensor:
    alpha, beta = alpha_beta(sigma)
    return torch.log(alpha) - torch.log(beta)


def _dpm_solver_2m(net: VNetwork, x: torch.Tensor, sigmas: torch.Tensor, kwargs: dict[str, Any], tick: Callable[[], None]) -> torch.Tensor:
    """DPM-Solver++(2M): multistep, data prediction, in log-SNR time lambda = log(alpha / beta).

    Steps from sigma = 1 (lambda = -inf) and to sigma = 0 are first order, as is the first step.
    """
    prev_x0: torch.Tensor | None = None
    prev_lam: torch.Tensor | None = None
    for i in range(len(sigmas) - 1):
        s, s_next = sigmas[i], sigmas[i + 1]
        x0, eps = _denoise(net, x, s, kwargs)
        alpha_next, beta_next = alpha_beta(s_next)
        lam = _log_snr(s) if 0 < s < 1 else None
        if s_next <= 0:
            x = x0
        elif lam is None:
            x = alpha_next * x0 + beta_next * eps
        else:
            h = _log_snr(s_next) - lam
            d = x0
            if prev_x0 is not None and prev_lam is not None:
                r = (lam - prev_lam) / h
                d = (1 + 1 / (2 * r)) * x0 - (1 / (2 * r)) * prev_x0
            x = (beta_next / alpha_beta(s)[1]) * x - alpha_next * torch.expm1(-h) * d
        prev_x0, prev_lam = x0, lam
        tick()
    return x


def sample(
    net: VNetwork,
    noise: torch.Tensor,
    steps: int,
    *,
    sampler: str = "dpm",
    init: torch.Tensor | None = None,
    init_strength: float = 0.0,
    progress: Callable[[], None] | None = None,
    **net_kwargs: Any,
) -> torch.Tensor:
    """Denoise ``noise`` (or ``init`` noised with it) to a sample; ``net_kwargs`` go to the net.

    ``progress`` is called once per network evaluation.
    """
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler '{sampler}'; use one of {', '.join(SAMPLERS)}")
    sigmas = schedule(steps, init_strength if init is not None else 0.0, noise.device)
    x = noise if init is None else add_noise(init, noise, sigmas[0])
    tick = progress or (lambda: None)
    with torch.no_grad():
        run = _v_sampler if sampler == "v" else _dpm_solver_2m
        return run(net, x, sigmas, net_kwargs, tick)
