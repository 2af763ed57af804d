"""The three latent levels: the Jukebox-compatible VQ-VAE, its codec and latent shards."""

from levels.jukebox_checkpoint import load_jukebox_vqvae

__all__ = ["load_jukebox_vqvae"]
