"""A wide blob's ink -> the line reader's input: a strip 32 px high, the ink 28 px high and left-aligned.

Touching characters are read whole by a small CTC line reader (``handler.model.LineReader``) rather than
cut apart; the training job (``training/line_reader.py``) makes its strips with this same function.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from handler.imaging import ops
from handler.imaging.glyph import own_ink
from handler.imaging.page import Ink
from handler.readings import Box

HEIGHT, WIDTH = 32, 128
BORDER = 2  # rows of paper above and below the ink
FRAME = 4  # strip columns per reader output (its convolutions halve the width twice)


def strip_columns(box: Box) -> int:
    """How many strip columns the blob's ink fills: its aspect kept, squeezed if wider than the strip."""
    return max(1, min(WIDTH, round(box.width * (HEIGHT - 2 * BORDER) / box.height)))


def to_strip(ink: Ink, box: Box, mask: np.ndarray) -> np.ndarray:
    """One blob (its box in the ink's pixels and its own mask) -> (32, 128) float32, white ink on black, 0-1,
    with a neighbour's ink inside the box left out."""
    own, row, column = own_ink(ink, box, mask)
    inner = own.crop(row, row + box.height - 1, column, column + box.width - 1)
    columns = strip_columns(box)
    small = ops.resize(inner, columns, HEIGHT - 2 * BORDER, Image.Resampling.BILINEAR)
    out = np.zeros((HEIGHT, WIDTH), dtype=np.float32)
    out[BORDER : HEIGHT - BORDER, :columns] = np.clip(small, 0.0, None) / max(float(small.max()), 1e-6)
    return out
