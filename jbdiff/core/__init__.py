"""The shared floor of jbdiff: what every level, stage and command builds on.

Audio I/O and streaming, typed configs, the 1-D UNet, v-diffusion and its samplers, noise
styles, crossfades, one stage on disk and foreign state dicts, atomic writes, errors, device
selection and the Lightning training plumbing. It imports torch, numpy and third-party
packages only: nothing of ``levels``, ``upsampler``, ``jbdiff.metrics`` or the composition
modules of ``jbdiff``.
"""
