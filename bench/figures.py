"""What the benchmarks print of many runs of one case."""

from __future__ import annotations

import statistics


def quartiles(values: list[float]) -> str:
    """The median and the quartiles, as ``0.97 (0.94-1.01)``."""
    if len(values) < 2:
        return f"{values[0]:.2f}" if values else "-"
    low, mid, high = statistics.quantiles(values, n=4)
    return f"{mid:.2f} ({low:.2f}-{high:.2f})"
