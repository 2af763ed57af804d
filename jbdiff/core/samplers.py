"""Samplers for v-objective models: the reference DDIM-style v-sampler and DPM-Solver++(2M) and (3M).

All walk a linear sigma schedule from 1 to 0 in ``steps`` steps. Starting from an init at
strength ``s`` skips the first ``round(s * steps)`` steps: the init is noised to the sigma
where sampling resumes (s = 0: pure noise, the init is ignored; s = 1: the init is returned).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from jbdiff.core.diffusion import VNetwork, add_noise, alpha_beta

SAMPLERS = ("v", "dpm", "dpm3")
"""``v``: the reference sampler (first order); ``dpm``: DPM-Solver++(2M); ``dpm3``: DPM-Solver++(3M)."""

_ORDERS = {"dpm": 2, "dpm3": 3}


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


def dpm_update(
    x: torch.Tensor, sigma: torch.Tensor, sigma_next: torch.Tensor, x0: torch.Tensor, history: list[tuple[torch.Tensor, torch.Tensor]], order: int
) -> torch.Tensor:
    """One DPM-Solver++ step from ``x`` at ``sigma`` (0 < sigma < 1) to ``sigma_next`` > 0, in log-SNR time.

    ``x0`` is the data prediction at ``sigma``; ``history`` holds the (lambda, x0) of the steps
    before, newest last, of which up to ``order`` - 1 are used. Order 2 is the original 2M
    update; order 3 integrates the quadratic through the last three predictions exactly
    against the exponential weight (phi functions of Lu et al. 2022). Its ``d2`` estimates
    h^2 x0''; the 3M code of k-diffusion and DPM-Solver weights half of that against the same
    phi_3, which measures as a local error of order h^3 instead of h^4 (tests/test_diffusion.py).
    """
    lam = _log_snr(sigma)
    h = _log_snr(sigma_next) - lam
    alpha_next, beta_next = alpha_beta(sigma_next)
    d, correction = x0, torch.zeros(())
    if order >= 3 and len(history) >= 2:
        (lam_2, x0_2), (lam_1, x0_1) = history[-2:]
        r0, r1 = (lam - lam_1) / h, (lam_1 - lam_2) / h
        d1_0, d1_1 = (x0 - x0_1) / r0, (x0_1 - x0_2) / r1
        phi_2 = torch.expm1(-h) / h + 1
        phi_3 = phi_2 / h - 0.5
        d1 = d1_0 + (d1_0 - d1_1) * r0 / (r0 + r1)  # h * dx0/dlambda at lambda
        d2 = 2 * (d1_0 - d1_1) / (r0 + r1)  # h^2 * d2x0/dlambda2
        correction = alpha_next * (phi_2 * d1 - phi_3 * d2)
    elif order >= 2 and history:
        lam_1, x0_1 = history[-1]
        r = (lam - lam_1) / h
        d = (1 + 1 / (2 * r)) * x0 - (1 / (2 * r)) * x0_1
    return (beta_next / alpha_beta(sigma)[1]) * x - alpha_next * torch.expm1(-h) * d + correction


def _dpm_solver(net: VNetwork, x: torch.Tensor, sigmas: torch.Tensor, kwargs: dict[str, Any], tick: Callable[[], None], order: int) -> torch.Tensor:
    """DPM-Solver++(2M) or (3M) over ``sigmas`` (:func:`dpm_update`).

    Steps from sigma = 1 (lambda = -inf) and to sigma = 0 are first order; the history restarts after them.
    """
    history: list[tuple[torch.Tensor, torch.Tensor]] = []
    for i in range(len(sigmas) - 1):
        s, s_next = sigmas[i], sigmas[i + 1]
        x0, eps = _denoise(net, x, s, kwargs)
        if s_next <= 0:
            x, history = x0, []
        elif not 0 < s < 1:
            alpha_next, beta_next = alpha_beta(s_next)
            x, history = alpha_next * x0 + beta_next * eps, []
        else:
            x = dpm_update(x, s, s_next, x0, history, order)
            history = [*history[-1:], (_log_snr(s), x0)]
        tick()
    return x


def integrate(
    net: VNetwork, x: torch.Tensor, sigmas: torch.Tensor, *, sampler: str = "dpm", progress: Callable[[], None] | None = None, **net_kwargs: Any
) -> torch.Tensor:
    """Solve from ``x`` at ``sigmas[0]`` through the decreasing ``sigmas`` (any, ending at 0 or not)."""
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler '{sampler}'; use one of {', '.join(SAMPLERS)}")
    tick = progress or (lambda: None)
    with torch.no_grad():
        if sampler == "v":
            return _v_sampler(net, x, sigmas, net_kwargs, tick)
        return _dpm_solver(net, x, sigmas, net_kwargs, tick, _ORDERS[sampler])


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
    return integrate(net, x, sigmas, sampler=sampler, progress=progress, **net_kwargs)
