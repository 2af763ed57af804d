"""The v-objective, the samplers and the window noise styles, on analytic cases."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from jbdiff.core.diffusion import add_noise, alpha_beta, v_loss
from jbdiff.core.noise import WindowNoise
from jbdiff.core.samplers import dpm_update, integrate, sample, schedule

MU, SD = 0.7, 0.2


def gaussian_denoiser(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """The exact v-prediction for data ~ N(MU, SD^2) per element."""
    alpha, beta = (t.view(-1, 1, 1) for t in alpha_beta(sigma))
    x0 = MU + alpha * SD**2 * (x - alpha * MU) / (alpha**2 * SD**2 + beta**2)
    return (alpha * x - x0) / beta.clamp_min(1e-12)


def test_alpha_beta_is_a_quarter_circle() -> None:
    sigma = torch.linspace(0, 1, 11)
    alpha, beta = alpha_beta(sigma)
    assert torch.allclose(alpha**2 + beta**2, torch.ones(11))
    assert alpha[0] == 1 and abs(beta[0]) < 1e-7 and abs(alpha[-1]) < 1e-7


def test_v_loss_is_zero_for_the_exact_velocity_and_uses_the_start_tensor() -> None:
    x = torch.randn(3, 4, 16)
    start = torch.randn(3, 4, 16)
    sigma = torch.tensor([0.1, 0.5, 0.9])

    def oracle(noisy: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        a, b = (t.view(-1, 1, 1) for t in alpha_beta(s))
        return a * start - b * x

    assert v_loss(oracle, x, start=start, sigma=sigma).item() < 1e-10
    assert v_loss(oracle, x, sigma=sigma, generator=torch.Generator().manual_seed(0)).item() > 0.1


def test_v_loss_is_seeded_by_the_generator() -> None:
    net = torch.nn.Conv1d(2, 2, 1)
    x = torch.randn(2, 2, 8)
    a = v_loss(lambda n, s: net(n), x, generator=torch.Generator().manual_seed(3))
    b = v_loss(lambda n, s: net(n), x, generator=torch.Generator().manual_seed(3))
    assert a.item() == b.item()


def test_samplers_reach_the_data_distribution() -> None:
    noise = torch.randn(2, 2, 4000, generator=torch.Generator().manual_seed(0))
    for name in ("v", "dpm", "dpm3"):
        out = sample(gaussian_denoiser, noise, 100, sampler=name)
        assert abs(out.mean().item() - MU) < 0.01 and abs(out.std().item() - SD) < 0.01


def test_dpm_solver_25_steps_is_closer_to_the_1000_step_reference_than_v_sampler() -> None:
    noise = torch.randn(2, 2, 2000, generator=torch.Generator().manual_seed(1))
    reference = sample(gaussian_denoiser, noise, 1000, sampler="v")
    err_v = (sample(gaussian_denoiser, noise, 25, sampler="v") - reference).abs().mean()
    err_dpm = (sample(gaussian_denoiser, noise, 25, sampler="dpm") - reference).abs().mean()
    assert err_dpm < err_v / 2


def _exact_path(z: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """The probability-flow ODE's solution for data ~ N(MU, SD^2) through x = z at sigma = 1."""
    alpha, beta = alpha_beta(sigma)
    return alpha * MU + torch.sqrt(alpha**2 * SD**2 + beta**2) * z


def _x0(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    alpha, beta = alpha_beta(sigma)
    return alpha * x - beta * gaussian_denoiser(x, sigma.view(1))


def _orders(errors: list[float]) -> list[float]:
    return [math.log2(a / b) for a, b in itertools.pairwise(errors)]


def test_dpm_update_local_error_has_the_order_of_the_solver_plus_one() -> None:
    """One step from the exact path and exact earlier predictions, halving the log-SNR step h."""
    z = torch.randn(1, 1, 200, generator=torch.Generator().manual_seed(4), dtype=torch.float64)

    def sigma_of(lam: float) -> torch.Tensor:  # alpha / beta = exp(lambda)
        return torch.tensor(math.atan(math.exp(-lam)) * 2 / math.pi, dtype=torch.float64)

    for order in (1, 2, 3):
        errors = []
        for h in (0.4, 0.2, 0.1, 0.05):
            sigmas = [sigma_of(lam) for lam in (-2 * h, -h, 0.0, h)]
            history = [(-2 * h * torch.ones(()), _x0(_exact_path(z, sigmas[0]), sigmas[0])), (-h * torch.ones(()), _x0(_exact_path(z, sigmas[1]), sigmas[1]))]
            x = _exact_path(z, sigmas[2])
            step = dpm_update(x, sigmas[2], sigmas[3], _x0(x, sigmas[2]), history, order)
            errors.append((step - _exact_path(z, sigmas[3])).abs().max().item())
        assert all(order + 0.8 < slope < order + 1.3 for slope in _orders(errors)), (order, _orders(errors))


def test_dpm3_beats_dpm2_at_equal_evaluations_on_the_gaussian_path() -> None:
    """Global error from sigma 0.9 to 0.2 (the 1st-order first step bounds the global order at 2)."""
    z = torch.randn(1, 1, 500, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    start, end = torch.tensor(0.9, dtype=torch.float64), torch.tensor(0.2, dtype=torch.float64)
    errors: dict[str, list[float]] = {}
    for name in ("v", "dpm", "dpm3"):
        errors[name] = [
            (integrate(gaussian_denoiser, _exact_path(z, start), torch.linspace(0.9, 0.2, n + 1, dtype=torch.float64), sampler=name) - _exact_path(z, end)).abs().max().item()
            for n in (8, 16, 32, 64)
        ]
    assert all(0.9 < slope < 1.1 for slope in _orders(errors["v"]))
    assert all(1.8 < slope < 2.2 for slope in _orders(errors["dpm"]))
    assert all(slope > 1.8 for slope in _orders(errors["dpm3"]))
    assert all(e3 < e2 / 3 for e2, e3 in zip(errors["dpm"], errors["dpm3"]))


def test_init_strength_skips_steps_and_keeps_the_init() -> None:
    assert len(schedule(20, 0.5)) == 11 and schedule(20, 0.5)[0].item() == pytest.approx(0.5)
    init = torch.full((1, 2, 64), MU)
    noise = torch.randn(1, 2, 64, generator=torch.Generator().manual_seed(2))
    calls = []
    out = sample(gaussian_denoiser, noise, 20, init=init, init_strength=1.0, progress=lambda: calls.append(1))
    assert torch.equal(out, init) and calls == []
    sample(gaussian_denoiser, noise, 20, init=init, init_strength=0.75, progress=lambda: calls.append(1))
    assert len(calls) == 5
    with pytest.raises(ValueError, match="strength"):
        schedule(10, 1.5)
    with pytest.raises(ValueError, match="sampler"):
        sample(gaussian_denoiser, noise, 5, sampler="euler")


def test_add_noise_matches_the_objective() -> None:
    x, n = torch.randn(4), torch.randn(4)
    a, b = math.cos(0.3 * math.pi / 2), math.sin(0.3 * math.pi / 2)
    assert torch.allclose(add_noise(x, n, 0.3), a * x + b * n)


@pytest.mark.parametrize("style", ["random", "constant", "region", "walk"])
def test_noise_styles(style: str) -> None:
    gen = WindowNoise(style, (1, 64, 4096), torch.Generator().manual_seed(0), step_size=0.3)
    windows = [gen.next() for _ in range(6)]
    for w in windows:
        assert abs(w.std().item() - 1) < 0.05
    similarity = [torch.nn.functional.cosine_similarity(windows[0].flatten(), w.flatten(), dim=0).item() for w in windows[1:]]
    if style == "random":
        assert all(abs(c) < 0.05 for c in similarity)
    elif style == "constant":
        assert all(torch.equal(windows[0], w) for w in windows[1:])
    elif style == "region":
        assert all(c == pytest.approx(math.sqrt(1 - 0.09), abs=0.03) for c in similarity)
    else:
        assert similarity[0] > similarity[-1] + 0.1
    again = WindowNoise(style, (1, 64, 4096), torch.Generator().manual_seed(0), step_size=0.3)
    assert torch.equal(again.next(), windows[0])


def test_bad_noise_style() -> None:
    with pytest.raises(ValueError, match="noise style"):
        WindowNoise("pink", (1,), torch.Generator())
