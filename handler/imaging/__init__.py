"""Image bytes -> the model's 28x28 input, by stage: ``decode`` (bytes -> pixels, budgets first),
``page`` (find the ink), ``glyph`` (EMNIST geometry), with ``ops`` as the primitives.
Pure image code: no model, no I/O."""

from __future__ import annotations

import numpy as np

from handler.imaging.decode import MAX_WORK_SIDE, decode
from handler.imaging.errors import ImageError
from handler.imaging.glyph import normalise

__all__ = ["MAX_WORK_SIDE", "ImageError", "decode", "normalise", "prepare"]


def prepare(data: bytes, max_pixels: int) -> np.ndarray:
    """Bytes -> model input, or :class:`ImageError` naming why the image cannot be read."""
    return normalise(decode(data, max_pixels))
