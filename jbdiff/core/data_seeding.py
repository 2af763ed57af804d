"""Random streams for endless training datasets: distinct per rank, worker and resume point."""

from __future__ import annotations

import numpy as np
import torch.distributed as dist
from torch.utils.data import get_worker_info


def stream_rng(seed: int, stream: int) -> np.random.Generator:
    """A generator seeded from ``seed``, the distributed rank, the dataloader worker and ``stream``.

    Pass the resume step as ``stream`` so a resumed run draws new crops instead of repeating.
    """
    worker = get_worker_info()
    rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
    return np.random.default_rng([seed, rank, worker.id if worker else 0, stream])
