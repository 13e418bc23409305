"""How fast an exported model runs, to choose between its variants (float16, dynamic range)."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np


def ms_per_item(predict: Callable[[np.ndarray], object], items: np.ndarray, batch: int, repeats: int = 20) -> float:
    """CPU milliseconds per item of one ``batch``-sized call, after a warm-up call (CPU time, not wall time:
    a shared host's other tenants do not count)."""
    sample = items[:batch]
    predict(sample)
    started = time.process_time()
    for _ in range(repeats):
        predict(sample)
    return (time.process_time() - started) * 1000 / (repeats * len(sample))
