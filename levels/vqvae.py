"""The Jukebox hierarchical VQ-VAE: one encoder, codebook and decoder per level.

Level ``l`` has its own encoder that downsamples by ``prod(stride**down)`` over levels
``0..l`` and its own decoder back to audio. With the 5b hyperparameters (the defaults of
``VQVAEConfig``) the ``state_dict`` has exactly the layout of OpenAI's ``vqvae.pth.tar``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from levels.codebook import Bottleneck


@dataclass(frozen=True)
class VQVAEConfig:
    """Architecture of the hierarchical VQ-VAE (defaults: OpenAI Jukebox 5b)."""

    levels: int = 3
    downs_t: tuple[int, ...] = (3, 2, 2)
    strides_t: tuple[int, ...] = (2, 2, 2)
    emb_width: int = 64
    l_bins: int = 2048
    l_mu: float = 0.99
    width: int = 32
    depth: int = 4
    m_conv: float = 1.0
    dilation_growth_rate: int = 3
    dilation_cycle: int | None = None
    multipliers: tuple[int, ...] = (2, 1, 1)
    reverse_decoder_dilation: bool = True
    channels: int = 1

    def __post_init__(self) -> None:
        for name in ("downs_t", "strides_t", "multipliers"):
            value = tuple(getattr(self, name))
            object.__setattr__(self, name, value)
            if len(value) != self.levels:
                raise ValueError(f"{name} has {len(value)} entries but levels is {self.levels}")

    @property
    def hops(self) -> tuple[int, ...]:
        """Audio samples per latent frame at each level (8, 32, 128 for 5b)."""
        hops, hop = [], 1
        for stride, down in zip(self.strides_t, self.downs_t):
            hop *= stride**down
            hops.append(hop)
        return tuple(hops)

    def level_width(self, level: int) -> int:
        return self.width * self.multipliers[level]

    def level_depth(self, level: int) -> int:
        return self.depth * self.multipliers[level]

    def dilations(self, level: int) -> list[int]:
        """Dilations of one residual stack at ``level`` (encoder order)."""
        cycle = self.dilation_cycle
        return [self.dilation_growth_rate ** (d if cycle is None else d % cycle) for d in range(self.level_depth(level))]


class ResidualUnit(nn.Module):
    """ReLU, dilated conv k3, ReLU, conv k1, added to the input."""

    def __init__(self, width: int, hidden: int, dilation: int) -> None:
        super().__init__()
        self.model = nn.Sequential(
            nn.ReLU(),
            nn.Conv1d(width, hidden, 3, 1, dilation, dilation),
            nn.ReLU(),
            nn.Conv1d(hidden, width, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.model(x)


class ResidualStack(nn.Module):
    """A stack of dilated residual units (``model.i`` in the Jukebox layout)."""

    def __init__(self, width: int, hidden: int, dilations: list[int]) -> None:
        super().__init__()
        self.model = nn.Sequential(*(ResidualUnit(width, hidden, d) for d in dilations))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class LevelBlock(nn.Module):
    """A module whose only child is the ``model`` Sequential (Jukebox naming)."""

    def __init__(self, *layers: nn.Module) -> None:
        super().__init__()
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class Encoder(nn.Module):
    """Audio (B, C, T) -> continuous embeddings (B, emb_width, T / hop) for one level."""

    def __init__(self, cfg: VQVAEConfig, level: int) -> None:
        super().__init__()
        width, dil = cfg.level_width(level), cfg.dilations(level)
        hidden = int(cfg.m_conv * width)
        blocks = []
        for stage in range(level + 1):
            stride, down = cfg.strides_t[stage], cfg.downs_t[stage]
            layers: list[nn.Module] = []
            for i in range(down):
                in_ch = (cfg.channels if stage == 0 else cfg.emb_width) if i == 0 else width
                layers.append(nn.Sequential(nn.Conv1d(in_ch, width, 2 * stride, stride, stride // 2), ResidualStack(width, hidden, dil)))
            layers.append(nn.Conv1d(width, cfg.emb_width, 3, 1, 1))
            blocks.append(LevelBlock(*layers))
        self.level_blocks = nn.ModuleList(blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.level_blocks:
            x = block(x)
        return x


class Decoder(nn.Module):
    """Quantised embeddings (B, emb_width, T / hop) -> audio (B, C, T) for one level."""

    def __init__(self, cfg: VQVAEConfig, level: int) -> None:
        super().__init__()
        width, dil = cfg.level_width(level), cfg.dilations(level)
        if cfg.reverse_decoder_dilation:
            dil = dil[::-1]
        hidden = int(cfg.m_conv * width)
        blocks = []
        for stage in range(level + 1):
            stride, down = cfg.strides_t[stage], cfg.downs_t[stage]
            layers: list[nn.Module] = [nn.Conv1d(cfg.emb_width, width, 3, 1, 1)]
            for i in range(down):
                out_ch = cfg.emb_width if i == down - 1 else width
                layers.append(nn.Sequential(ResidualStack(width, hidden, dil), nn.ConvTranspose1d(width, out_ch, 2 * stride, stride, stride // 2)))
            blocks.append(LevelBlock(*layers))
        self.level_blocks = nn.ModuleList(blocks)
        self.out = nn.Conv1d(cfg.emb_width, cfg.channels, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in reversed(self.level_blocks):
            x = block(x)
        return self.out(x)


class VQVAE(nn.Module):
    """Hierarchical VQ-VAE with ``encoders``, ``decoders`` and ``bottleneck`` per level."""

    def __init__(self, cfg: VQVAEConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoders = nn.ModuleList(Encoder(cfg, level) for level in range(cfg.levels))
        self.decoders = nn.ModuleList(Decoder(cfg, level) for level in range(cfg.levels))
        self.bottleneck = Bottleneck(cfg.l_bins, cfg.emb_width, cfg.l_mu, cfg.levels)

    def encode(self, audio: torch.Tensor, level: int) -> torch.Tensor:
        """Audio (B, C, T) -> codes (B, T / hop[level]); T must be a multiple of the hop."""
        return self.bottleneck.level_blocks[level].encode(self.encoders[level](audio))

    def decode(self, codes: torch.Tensor, level: int) -> torch.Tensor:
        """Codes (B, frames) -> audio (B, C, frames * hop[level])."""
        return self.decoders[level](self.bottleneck.level_blocks[level].decode(codes))

    def forward(self, audio: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor], list[dict[str, torch.Tensor]]]:
        """Training pass: per level (reconstruction, commit loss, codebook metrics).

        The codebooks are EMA-updated when the module is in training mode.
        """
        outs, commits, metrics = [], [], []
        for level in range(self.cfg.levels):
            _, quantised, commit, stats = self.bottleneck.level_blocks[level](self.encoders[level](audio), update=self.training)
            outs.append(self.decoders[level](quantised))
            commits.append(commit)
            metrics.append(stats)
        return outs, commits, metrics
