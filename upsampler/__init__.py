"""Everything that upsamples a coarser result.

- ``residual``: the level-1 and level-0 residual upsamplers at sampling time: each refines
  "the level above, decoded and re-encoded here" with a ``levels.latent_denoiser`` trained
  by ``levels.denoiser_training``.
- The Dance-Diffusion stereo stage: its network (``dance_unet``, which also reads Harmonai's
  ``.ckpt`` files), inference (``dance_refiner``: mono -> stereo at 44.1 kHz) and training
  (``dance_training``).

May import ``jbdiff.core`` and ``levels``; never the composition modules of ``jbdiff``.
"""
