"""jbdiff: hierarchical multi-level latent diffusion for music.

This module stays light: it imports no model code, so ``import jbdiff`` is fast and the
module graph has no cycles.
"""

__version__ = "0.1.0"
SAMPLE_RATE = 44100
