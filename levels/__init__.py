"""The three latent levels, and what makes and models them.

- The codec: the Jukebox-compatible VQ-VAE (``vqvae``, ``codebook``; ``fast_decoder``, its
  decoder restructured for inference), the per-level codec (``codec``: audio <-> codes <->
  normalised latents), its config, loss, training and I/O (``codec_io``,
  ``jukebox_checkpoint`` for OpenAI's ``vqvae.pth.tar``).
- Latent data: pre-encoded shards (``latent_shards``) and the training windows read from
  them (``latent_dataset``).
- The level model: the context-attended ``latent_denoiser`` that every level uses, the
  level-2 ``base_prior``, level training (``denoiser_training``) and the Jukebox-Diffusion
  v1 checkpoint importer (``jbdiff_v1_checkpoint``).

May import ``jbdiff.core`` and third-party packages only (never ``upsampler`` or the
composition modules of ``jbdiff``).
"""

from levels.jukebox_checkpoint import load_jukebox_vqvae

__all__ = ["load_jukebox_vqvae"]
