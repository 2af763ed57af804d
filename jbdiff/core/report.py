"""Reports for people and programs: fixed-width markdown tables and strict JSON values."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]], *, left: int = 0) -> str:
    """A fixed-width markdown table; the first ``left`` columns are left-aligned, the rest right."""
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]
    cells = [
        "| " + " | ".join(c.ljust(w) if i < left else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))) + " |"
        for row in (header, *rows)
    ]
    rule = "|" + "|".join("-" * (w + 2) if i < left else "-" * (w + 1) + ":" for i, w in enumerate(widths)) + "|"
    return "\n".join([cells[0], rule, *cells[1:]])


def json_safe(value: Any) -> Any:
    """``value`` with non-finite floats as None and numpy scalars as Python numbers (strict JSON has no NaN)."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value
