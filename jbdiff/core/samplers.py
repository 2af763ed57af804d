"""Samplers for v-objective models: the reference DDIM-style v-sampler and DPM-Solver++(2M) and (3M).

All walk a linear sigma schedule from 1 to 0 in ``steps`` steps. Starting from an init at
strength ``s`` skips the first ``round(s * steps)`` steps: the init is noised to the sigma
where sampling resumes (s = 0: pure noise, the init is ignored; s = 1: the init is returned).

Known-region conditioning (RePaint-style inpainting): given ``known`` latents and a
``known_mask``, after every step the masked entries are replaced by ``known`` noised to the
current sigma with the sampler's own starting noise (for a residual level, its start tensor:
the path the model was trained on), so the rest is denoised to fit them; at sigma 0 they are
``known`` exactly. ``jumps`` > 0 adds RePaint's resampling: each step is undone (re-noised
with fresh noise) and redone that many times, so the generated part can react to the known
part. :func:`invert` runs the v-sampler backwards (deterministic, eta 0) from data to noise.
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


Project = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""``project(x, sigma)``: x with its known entries put back at noise level ``sigma``."""


def _unconstrained(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    return x


def _v_step(net: VNetwork, x: torch.Tensor, s: torch.Tensor, s_next: torch.Tensor, kwargs: dict[str, Any]) -> torch.Tensor:
    x0, eps = _denoise(net, x, s, kwargs)
    alpha, beta = alpha_beta(s_next)
    return alpha * x0 + beta * eps


def _v_sampler(net: VNetwork, x: torch.Tensor, sigmas: torch.Tensor, kwargs: dict[str, Any], tick: Callable[[], None], project: Project) -> torch.Tensor:
    for i in range(len(sigmas) - 1):
        x = project(_v_step(net, x, sigmas[i], sigmas[i + 1], kwargs), sigmas[i + 1])
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


def _dpm_solver(
    net: VNetwork, x: torch.Tensor, sigmas: torch.Tensor, kwargs: dict[str, Any], tick: Callable[[], None], project: Project, order: int
) -> torch.Tensor:
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
        x = project(x, s_next)
        tick()
    return x


def _keeping(known: torch.Tensor, mask: torch.Tensor, noise: torch.Tensor) -> Project:
    """Put back ``known`` where ``mask`` is True, noised with ``noise`` to the given sigma."""

    def project(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        return torch.where(mask, add_noise(known, noise, sigma).to(x.dtype), x)

    return project


def _renoise(x: torch.Tensor, s: torch.Tensor, s_back: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """x at ``s`` taken back up to ``s_back`` > s with fresh Gaussian noise (the forward process)."""
    alpha, beta = alpha_beta(s)
    alpha_back, beta_back = alpha_beta(s_back)
    ratio = alpha_back / alpha
    spread = torch.sqrt((beta_back**2 - (ratio * beta) ** 2).clamp_min(0.0))
    return ratio * x + spread * torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)


Run = Callable[[VNetwork, torch.Tensor, torch.Tensor, dict[str, Any], Callable[[], None], Project], torch.Tensor]


def _jumping(run: Run, jumps: int, generator: torch.Generator | None) -> Run:
    """``run`` with RePaint's resampling: each step undone and redone ``jumps`` more times.

    Every step is taken as a one-step run of the sampler (a multistep solver degrades to
    first order), so the known part is projected in after each one.
    """

    def jumping(net: VNetwork, x: torch.Tensor, sigmas: torch.Tensor, kwargs: dict[str, Any], tick: Callable[[], None], project: Project) -> torch.Tensor:
        for i in range(len(sigmas) - 1):
            pair = sigmas[i : i + 2]
            for repeat in range(jumps + 1):
                x = run(net, x, pair, kwargs, tick, project)
                if repeat < jumps and pair[1] > 0:
                    x = _renoise(x, pair[1], pair[0], generator)
        return x

    return jumping


def _solver(sampler: str) -> Run:
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler '{sampler}'; use one of {', '.join(SAMPLERS)}")
    if sampler == "v":
        return _v_sampler
    order = _ORDERS[sampler]
    return lambda net, x, sigmas, kwargs, tick, project: _dpm_solver(net, x, sigmas, kwargs, tick, project, order)


def integrate(
    net: VNetwork, x: torch.Tensor, sigmas: torch.Tensor, *, sampler: str = "dpm", progress: Callable[[], None] | None = None, **net_kwargs: Any
) -> torch.Tensor:
    """Solve from ``x`` at ``sigmas[0]`` through the decreasing ``sigmas`` (any, ending at 0 or not)."""
    run = _solver(sampler)
    tick = progress or (lambda: None)
    with torch.no_grad():
        return run(net, x, sigmas, net_kwargs, tick, _unconstrained)


def sample(
    net: VNetwork,
    noise: torch.Tensor,
    steps: int,
    *,
    sampler: str = "dpm",
    init: torch.Tensor | None = None,
    init_strength: float = 0.0,
    known: torch.Tensor | None = None,
    known_mask: torch.Tensor | None = None,
    jumps: int = 0,
    generator: torch.Generator | None = None,
    progress: Callable[[], None] | None = None,
    **net_kwargs: Any,
) -> torch.Tensor:
    """Denoise ``noise`` (or ``init`` noised with it) to a sample; ``net_kwargs`` go to the net.

    With ``known`` (shaped like ``noise``) and ``known_mask`` (boolean, broadcastable to it,
    True where ``known`` holds), the sample equals ``known`` there and the rest is inpainted;
    ``jumps`` resamplings per step draw their noise from ``generator``. ``progress`` is
    called once per network evaluation.
    """
    run = _solver(sampler)
    if (known is None) != (known_mask is None):
        raise ValueError("known and known_mask go together")
    if jumps < 0:
        raise ValueError(f"jumps must be >= 0, got {jumps}")
    sigmas = schedule(steps, init_strength if init is not None else 0.0, noise.device)
    x = noise if init is None else add_noise(init, noise, sigmas[0])
    if known is None or known_mask is None:
        return integrate(net, x, sigmas, sampler=sampler, progress=progress, **net_kwargs)
    if known.shape != noise.shape:
        raise ValueError(f"known latents shaped {tuple(known.shape)} do not match the noise {tuple(noise.shape)}")
    project = _keeping(known, known_mask.to(device=noise.device, dtype=torch.bool), noise)
    if jumps:
        run = _jumping(run, jumps, generator)
    tick = progress or (lambda: None)
    with torch.no_grad():
        return run(net, project(x, sigmas[0]), sigmas, net_kwargs, tick, project)


def invert(
    net: VNetwork,
    x: torch.Tensor,
    steps: int,
    *,
    progress: Callable[[], None] | None = None,
    **net_kwargs: Any,
) -> torch.Tensor:
    """The noise that the v-sampler (eta 0) turns into ``x`` in ``steps`` steps: its ODE run backwards.

    Sampling from the result with ``sampler="v"``, the same steps and ``net_kwargs`` gives
    ``x`` back up to the discretisation error, which shrinks as ``steps`` grows.
    """
    sigmas = schedule(steps, 0.0, x.device).flip(0)
    tick = progress or (lambda: None)
    with torch.no_grad():
        for i in range(len(sigmas) - 1):
            x = _v_step(net, x, sigmas[i], sigmas[i + 1], net_kwargs)
            tick()
    return x
