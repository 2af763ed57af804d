"""The inference decoder computes what the ``nn.Module`` decoder computes, to float rounding."""

from __future__ import annotations

import pytest
import torch

from levels.codec import Codec
from levels.fast_decoder import fast_decode
from levels.vqvae import VQVAE, VQVAEConfig

CONFIGS = {
    "jukebox layout, small": VQVAEConfig(downs_t=(3, 2, 2), width=8, depth=5, l_bins=64),
    "strides 4 and 2, stereo, no reversed dilation": VQVAEConfig(
        downs_t=(1, 2, 1), strides_t=(4, 2, 4), width=6, depth=3, emb_width=5, l_bins=32, channels=2, reverse_decoder_dilation=False
    ),
}


def _randomised(cfg: VQVAEConfig, seed: int) -> VQVAE:
    """A VQ-VAE whose biases are as large as its weights, so that folding them wrongly shows."""
    torch.manual_seed(seed)
    vqvae = VQVAE(cfg).eval()
    with torch.no_grad():
        for name, param in vqvae.named_parameters():
            if name.endswith("bias"):
                param.uniform_(-0.3, 0.3)
    return vqvae


@pytest.mark.parametrize("name", list(CONFIGS))
@pytest.mark.parametrize("frames", [3, 9, 40])
def test_fast_decode_equals_the_module_everywhere(name: str, frames: int) -> None:
    cfg = CONFIGS[name]
    vqvae = _randomised(cfg, seed=frames)
    for level in range(cfg.levels):
        x = torch.randn(2, cfg.emb_width, frames)
        kept = x.clone()
        with torch.no_grad():
            want = vqvae.decoders[level](x)
        got = fast_decode(vqvae.decoders[level], x)
        assert got.shape == want.shape == (2, cfg.channels, frames * cfg.hops[level])
        peak = want.abs().max().item()
        assert peak > 0.01
        # Every sample, the first and last ones (recomputed at the folded edges) included.
        assert (got - want).abs().max().item() <= 1e-5 * peak, f"level {level} differs"
        assert torch.equal(x, kept), "the input was modified"


def test_codec_decodes_through_the_fast_path_with_the_module_result(tiny_codec: Codec) -> None:
    vqvae = tiny_codec.vqvae
    frames = 700  # several chunks at level 0 with a short chunk length
    codes = torch.randint(0, tiny_codec.cfg.l_bins, (1, frames))
    chunked = Codec(vqvae, chunk_seconds=0.05).eval()
    with torch.no_grad():
        want = vqvae.decode(codes, 0)
    got = chunked.decode_codes(0, codes)
    assert got.shape == want.shape
    assert (got - want).abs().max().item() <= 1e-5 * want.abs().max().item()


def test_fast_decode_leaves_gradients_off() -> None:
    vqvae = _randomised(CONFIGS["jukebox layout, small"], seed=0)
    x = torch.randn(1, 64, 12, requires_grad=True)
    assert not fast_decode(vqvae.decoders[1], x).requires_grad
