"""The VQ-VAE training loss: multi-resolution spectral distance, l2 and l-infinity, commitment.

The Jukebox recipe scales each term by a "bandwidth" measured once over the dataset; we
normalise by the target itself instead (relative l2, spectral convergence per resolution),
which is loudness-independent and needs no dataset pass.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class CodecLossConfig:
    """Loss weights and STFT resolutions (defaults: Jukebox 5b)."""

    multispectral: float = 1.0
    l2: float = 1.0
    linf: float = 0.02
    linf_k: int = 2048
    commit: float = 0.02
    n_fft: tuple[int, ...] = (2048, 1024, 512)
    hop_length: tuple[int, ...] = (240, 120, 50)
    window_size: tuple[int, ...] = (1200, 600, 240)

    def __post_init__(self) -> None:
        if not len(self.n_fft) == len(self.hop_length) == len(self.window_size):
            raise ValueError("n_fft, hop_length and window_size need the same number of entries")


def _magnitude(x: torch.Tensor, n_fft: int, hop: int, win: int) -> torch.Tensor:
    window = torch.hann_window(win, device=x.device, dtype=torch.float32)
    spec = torch.stft(x.reshape(-1, x.shape[-1]).float(), n_fft, hop, win, window, return_complex=True)
    return spec.abs()


def multispectral_loss(target: torch.Tensor, estimate: torch.Tensor, cfg: CodecLossConfig) -> torch.Tensor:
    """Mean over resolutions of ||S(target) - S(estimate)|| / ||S(target)|| per item."""
    total = target.new_zeros((), dtype=torch.float32)
    for n_fft, hop, win in zip(cfg.n_fft, cfg.hop_length, cfg.window_size):
        ref, est = _magnitude(target, n_fft, hop, win), _magnitude(estimate, n_fft, hop, win)
        num = torch.linalg.norm((ref - est).flatten(1), dim=1)
        den = torch.linalg.norm(ref.flatten(1), dim=1) + 1e-3
        total = total + (num / den).mean()
    return total / len(cfg.n_fft)


def l2_loss(target: torch.Tensor, estimate: torch.Tensor) -> torch.Tensor:
    """Squared error relative to the target's power."""
    return (estimate - target).pow(2).mean() / (target.pow(2).mean() + 1e-6)


def linf_loss(target: torch.Tensor, estimate: torch.Tensor, k: int) -> torch.Tensor:
    """Mean of the ``k`` largest squared errors per item, relative to the target's power."""
    residual = (estimate - target).pow(2).flatten(1)
    top = residual.topk(min(k, residual.shape[1]), dim=1).values
    return top.mean() / (target.pow(2).mean() + 1e-6)


def codec_loss(
    target: torch.Tensor, outputs: list[torch.Tensor], commits: list[torch.Tensor], cfg: CodecLossConfig
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Total loss over all levels' reconstructions, plus per-level terms for logging."""
    total = target.new_zeros((), dtype=torch.float32)
    logs: dict[str, torch.Tensor] = {}
    for level, (estimate, commit) in enumerate(zip(outputs, commits)):
        spec = multispectral_loss(target, estimate, cfg)
        l2 = l2_loss(target, estimate)
        linf = linf_loss(target, estimate, cfg.linf_k)
        level_loss = cfg.multispectral * spec + cfg.l2 * l2 + cfg.linf * linf + cfg.commit * commit
        total = total + level_loss
        logs.update({f"spec/l{level}": spec, f"l2/l{level}": l2, f"linf/l{level}": linf, f"commit/l{level}": commit})
    return total, logs
