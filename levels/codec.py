"""The per-level codec: audio <-> codes <-> normalised latents, in overlapping chunks.

Latents are the codebook vectors of a level, normalised by that codebook's scalar mean and
standard deviation (the Jukebox-Diffusion convention): shape (batch, emb_width, frames) with
frames = samples / hop. Long audio is processed in chunks whose overlap covers the network's
receptive field, so the chunked result equals the whole-signal result while memory is bounded
by the chunk size.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Iterable

import torch
from torch import nn

from jbdiff.core.audio import SAMPLE_RATE
from levels.fast_decoder import fast_decode
from levels.vqvae import VQVAE, VQVAEConfig


def encoder_radius(cfg: VQVAEConfig, level: int) -> int:
    """How many audio samples either side of a latent frame its encoder can see."""
    radius, stride_in = 0, 1
    reach = sum(cfg.dilations(level))
    for stage in range(level + 1):
        stride = cfg.strides_t[stage]
        for _ in range(cfg.downs_t[stage]):
            radius += (2 * stride) * stride_in
            stride_in *= stride
            radius += reach * stride_in
        radius += stride_in
    return radius


def decoder_radius(cfg: VQVAEConfig, level: int) -> int:
    """How many audio samples either side of an output sample its decoder input spans."""
    stride_in = cfg.hops[level]
    reach = sum(cfg.dilations(level))
    radius = 0
    for stage in reversed(range(level + 1)):
        radius += stride_in
        for _ in range(cfg.downs_t[stage]):
            radius += reach * stride_in + 2 * stride_in
            stride_in //= cfg.strides_t[stage]
    return radius + 1


def _chunks(length: int, chunk: int, overlap: int) -> Iterable[tuple[int, int, int, int]]:
    """(read_start, read_end, keep_start, keep_end) over ``range(length)`` in steps of ``chunk``."""
    for start in range(0, length, chunk):
        end = min(start + chunk, length)
        yield max(0, start - overlap), min(length, end + overlap), start, end


class Codec(nn.Module):
    """A VQ-VAE plus per-level latent normalisation and chunked encode/decode."""

    sample_rate = SAMPLE_RATE

    def __init__(self, vqvae: VQVAE, chunk_seconds: float = 10.0) -> None:
        super().__init__()
        self.vqvae = vqvae
        self.chunk_seconds = chunk_seconds
        levels = vqvae.cfg.levels
        self.register_buffer("latent_mean", torch.zeros(levels))
        self.register_buffer("latent_std", torch.ones(levels))

    @property
    def cfg(self) -> VQVAEConfig:
        return self.vqvae.cfg

    @property
    def hops(self) -> tuple[int, ...]:
        return self.cfg.hops

    @property
    def levels(self) -> int:
        return self.cfg.levels

    @property
    def device(self) -> torch.device:
        return self.vqvae.bottleneck.level_blocks[0].k.device

    @property
    def dtype(self) -> torch.dtype:
        return self.vqvae.decoders[0].out.weight.dtype

    @torch.no_grad()
    def refresh_normalisation(self) -> None:
        """Set each level's latent mean/std from its codebook (call after training or loading)."""
        for level, block in enumerate(self.vqvae.bottleneck.level_blocks):
            self.latent_mean[level] = block.k.mean()
            self.latent_std[level] = block.k.std().clamp_min(1e-8)

    def fingerprint(self) -> str:
        """A short hash of all weights, codebooks and normalisation: equal iff the codec is."""
        digest = hashlib.sha256()
        for name, tensor in sorted(self.state_dict().items()):
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        return digest.hexdigest()[:16]

    def _chunk_samples(self) -> int:
        top = max(self.hops)
        return max(top, int(self.chunk_seconds * self.sample_rate) // top * top)

    def _check_audio(self, audio: torch.Tensor) -> torch.Tensor:
        if audio.dim() == 2:
            audio = audio[None]
        if audio.dim() != 3 or audio.shape[1] != self.cfg.channels:
            raise ValueError(f"expected audio shaped (batch, {self.cfg.channels}, samples), got {tuple(audio.shape)}")
        return audio

    def _check_level(self, level: int) -> None:
        if not 0 <= level < self.levels:
            raise ValueError(f"level {level} is outside 0..{self.levels - 1}")

    def _check_latents(self, level: int, latents: torch.Tensor) -> None:
        self._check_level(level)
        if latents.dim() != 3 or latents.shape[1] != self.cfg.emb_width:
            raise ValueError(f"expected latents shaped (batch, {self.cfg.emb_width}, frames), got {tuple(latents.shape)}")

    def padded_length(self, samples: int) -> int:
        """``samples`` rounded up to a multiple of the coarsest hop (what encode pads to)."""
        top = max(self.hops)
        return -(-samples // top) * top

    @torch.no_grad()
    def encode_codes(self, audio: torch.Tensor, levels: Iterable[int] | None = None) -> dict[int, torch.Tensor]:
        """Audio (batch, channels, samples) -> {level: codes (batch, frames)}.

        The audio is zero-padded at the end to a multiple of the coarsest hop, so every
        level's frames cover the same span.
        """
        audio = self._check_audio(audio)
        out = {}
        for level in sorted(set(range(self.levels) if levels is None else levels)):
            self._check_level(level)
            out[level] = self._encode_level(audio, level)
        return out

    def _encode_level(self, audio: torch.Tensor, level: int) -> torch.Tensor:
        hop = self.hops[level]
        overlap = math.ceil(encoder_radius(self.cfg, level) / max(self.hops)) * max(self.hops)
        pieces = []
        samples = audio.shape[-1]
        for lo, hi, keep_lo, keep_hi in _chunks(self.padded_length(samples), self._chunk_samples(), overlap):
            piece = audio[..., lo : min(hi, samples)].to(self.device, self.dtype)
            piece = nn.functional.pad(piece, (0, hi - lo - piece.shape[-1]))  # zero-pad the end, chunk by chunk
            codes = self.vqvae.encode(piece, level)
            pieces.append(codes[:, (keep_lo - lo) // hop : (keep_hi - lo) // hop].to(audio.device))
        return torch.cat(pieces, dim=-1)

    def codes_to_latents(self, level: int, codes: torch.Tensor) -> torch.Tensor:
        """Codes (batch, frames) -> normalised latents (batch, emb_width, frames)."""
        self._check_level(level)
        vectors = self.vqvae.bottleneck.level_blocks[level].decode(codes.to(self.device))
        return (vectors - self.latent_mean[level]) / self.latent_std[level]

    def latent_codebook(self, level: int) -> torch.Tensor:
        """Every code's normalised latent vector at ``level``: (l_bins, emb_width)."""
        codes = torch.arange(self.cfg.l_bins, device=self.device)[None]
        return self.codes_to_latents(level, codes)[0].t().contiguous()

    def latents_to_codes(self, level: int, latents: torch.Tensor) -> torch.Tensor:
        """Normalised latents -> nearest codes (batch, frames)."""
        self._check_latents(level, latents)
        vectors = latents.to(self.device) * self.latent_std[level] + self.latent_mean[level]
        return self.vqvae.bottleneck.level_blocks[level].encode(vectors)

    @torch.no_grad()
    def encode(self, audio: torch.Tensor, levels: Iterable[int] | None = None) -> dict[int, torch.Tensor]:
        """Audio (batch, channels, samples) -> {level: normalised latents (batch, emb_width, frames)}."""
        return {level: self.codes_to_latents(level, codes) for level, codes in self.encode_codes(audio, levels).items()}

    @torch.no_grad()
    def decode(self, level: int, latents: torch.Tensor, quantize: bool = True) -> torch.Tensor:
        """Normalised latents (batch, emb_width, frames) -> audio (batch, channels, frames * hop).

        With ``quantize`` the latents snap to their nearest codebook vectors first (what the
        decoder was trained on); without, they are decoded as they are.
        """
        self._check_latents(level, latents)
        if quantize:
            return self.decode_codes(level, self.latents_to_codes(level, latents))
        vectors = latents.to(self.device) * self.latent_std[level] + self.latent_mean[level]
        return self._decode_level(vectors, level, lambda v: fast_decode(self.vqvae.decoders[level], v))

    @torch.no_grad()
    def decode_codes(self, level: int, codes: torch.Tensor) -> torch.Tensor:
        """Codes (batch, frames) -> audio (batch, channels, frames * hop)."""
        self._check_level(level)
        quantiser = self.vqvae.bottleneck.level_blocks[level]
        return self._decode_level(codes, level, lambda c: fast_decode(self.vqvae.decoders[level], quantiser.decode(c)))

    @torch.no_grad()
    def reconstruct(self, audio: torch.Tensor, level: int) -> torch.Tensor:
        """Audio (batch, channels, samples) encoded at ``level`` and decoded back, trimmed to its length."""
        self._check_level(level)
        codes = self.encode_codes(audio, [level])[level]
        return self.decode_codes(level, codes)[..., : audio.shape[-1]]

    def _decode_level(self, inputs: torch.Tensor, level: int, decode: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        hop = self.hops[level]
        chunk = self._chunk_samples() // hop
        overlap = math.ceil(decoder_radius(self.cfg, level) / hop) + 1
        pieces = []
        for lo, hi, keep_lo, keep_hi in _chunks(inputs.shape[-1], chunk, overlap):
            audio = decode(inputs[..., lo:hi].to(self.device))
            pieces.append(audio[..., (keep_lo - lo) * hop : (keep_hi - lo) * hop])
        return torch.cat(pieces, dim=-1)
