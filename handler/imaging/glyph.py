"""One character's ink -> the model's input: the 28x28 EMNIST geometry (Cohen et al. 2017).

Crop to the ink (trimmed, so a speck does not stretch it), thicken strokes much thinner than
NIST's, centre in a square keeping the aspect ratio with a 2-pixel border, Gaussian blur, bicubic
to 28x28, stretch to full range. The training job runs this same code on its images.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from PIL import Image

from handler.imaging import ops
from handler.imaging.decode import MIN_CONTRAST
from handler.imaging.errors import ErrorCode, ImageError
from handler.imaging.page import MIN_INK_PIXELS, Ink, find_ink
from handler.readings import Box

SIDE = 28
GLYPH = 24  # the glyph's longer side inside the 28x28 frame: a 2-pixel border
WORK_SCALE = 4  # lay the glyph out at 4x the output size, then blur and shrink once
THIN_STROKE = 0.12  # relative stroke width below which strokes are thickened (EMNIST median: 0.17)
TARGET_STROKE = 0.15
BLUR_SIGMA = 1.0
AXIS_MAPS = 512  # per-axis maps kept: 28 x side float32 each (14 KB at 128 px; 58 MB if all were 1,024 px)


def to_glyph(ink: Ink) -> np.ndarray:
    """:class:`Ink` -> (28, 28) float32, white ink on black, centred, 0-1."""
    as_bytes = ink.mask.view(np.uint8)  # summing bytes into int32 is twice as fast as counting booleans
    top, bottom = ops.trimmed_extent(as_bytes.sum(axis=1, dtype=np.int32))
    left, right = ops.trimmed_extent(as_bytes.sum(axis=0, dtype=np.int32))
    glyph = ink.crop(top, bottom, left, right)
    relative_stroke = ops.relative_stroke_width(ink.mask[top : bottom + 1, left : right + 1])

    glyph_h, glyph_w = glyph.shape
    target = GLYPH * WORK_SCALE
    scale = target / max(glyph_h, glyph_w)
    new_w, new_h = max(1, round(glyph_w * scale)), max(1, round(glyph_h * scale))
    kind = Image.Resampling.BICUBIC if scale > 1 else Image.Resampling.BOX
    if relative_stroke < THIN_STROKE:
        grow = round((TARGET_STROKE - relative_stroke) * target)
        size = min(9, max(3, grow + 1)) | 1  # a k-pixel max filter widens strokes by k - 1
        glyph = ops.rank_filter(ops.resize(glyph, new_w, new_h, kind), size, np.maximum)
        rows, columns = _centred_shrink(new_h), _centred_shrink(new_w)
    else:  # the resize to the work scale folded into the blur and shrink: two small products, no image
        rows, columns = axis_map(glyph_h, new_h, kind), axis_map(glyph_w, new_w, kind)
    small = rows @ glyph @ columns.T
    small = np.clip(small, 0.0, None)
    top_value = float(small.max())
    if top_value <= 0:
        raise ImageError(ErrorCode.NO_INK, "no handwriting found after cropping")
    return (small / top_value).astype(np.float32)


@lru_cache(maxsize=AXIS_MAPS)
def axis_map(side: int, work: int, resample: Image.Resampling) -> np.ndarray:
    """One axis of a crop of ``side`` px -> its 28 output pixels: resized to ``work`` px, centred on the
    canvas, blurred and shrunk, as one (28, side) matrix. Building a crop's two maps takes about 1.2x
    Pillow's resize of it; once cached, resize, blur and shrink are two small products, about 8x less.
    So it pays where crop sizes repeat (the same scanner, form or camera); ``AXIS_MAPS`` bound the memory."""
    return _centred_shrink(work) @ ops.resize_matrix(side, work, resample)


def _centred_shrink(work: int) -> np.ndarray:
    """Blur and shrink of one axis for ``work`` px of glyph centred on the canvas: the (28, work) columns of
    the canvas's map that the glyph covers (the canvas is zero elsewhere)."""
    canvas_side = SIDE * WORK_SCALE
    offset = (canvas_side - work) // 2
    return ops.blur_and_shrink(canvas_side, SIDE, BLUR_SIGMA)[:, offset : offset + work]


def own_ink(ink: Ink, box: Box, mask: np.ndarray) -> tuple[Ink, int, int]:
    """A piece of a page (its box and its own ink mask) as :class:`Ink` of its own: the box and a pixel
    around it, a neighbour's ink inside left out, the piece's anti-aliased edges kept. Also the box's row and
    column offset inside it (1, or 0 at the page's edge)."""
    height, width = ink.mask.shape
    top, left = max(0, box.top - 1), max(0, box.left - 1)
    bottom, right = min(height, box.top + box.height + 1), min(width, box.left + box.width + 1)
    own = np.zeros((bottom - top, right - left), dtype=bool)
    own[box.top - top : box.top - top + box.height, box.left - left : box.left - left + box.width] = mask
    values = np.where(ops.grow(own), ink.values[top:bottom, left:right], 0)
    return Ink(values, own, ink.background, ink.peak, ink.level), box.top - top, box.left - left


def glyph_of(ink: Ink, box: Box, mask: np.ndarray) -> np.ndarray:
    """One candidate character of a page (its box and its own ink mask) -> the model's input: the same
    geometry as a single-character upload, with a neighbour's ink inside the box left out."""
    return to_glyph(own_ink(ink, box, mask)[0])


EMNIST_MIN_EXTENT = 18  # EMNIST glyphs span 24 px or so of their 28
EMNIST_MAX_OFF_CENTRE = 3.0
EMNIST_MAX_BACKGROUND = 0.1  # of the peak: a clean black (or white) field around the glyph


def as_emnist(gray: np.ndarray) -> np.ndarray | None:
    """A 28x28 image already in EMNIST's geometry (a glyph of ~24 px, centred, on a clean field) goes to the
    model as it is, only polarity and range fixed: normalising it again would blur and shift what the
    model was trained on. Anything else (off-centre, small, noisy) returns None and is normalised."""
    if gray.shape != (SIDE, SIDE):
        return None
    values = gray.astype(np.float32) / (255.0 if gray.dtype == np.uint8 else 1.0)
    if np.median(ops.border(values, 2)) > 0.5:
        values = 1.0 - values
    peak = float(values.max())
    if peak < MIN_CONTRAST or np.median(ops.border(values, 2)) > EMNIST_MAX_BACKGROUND * peak:
        return None
    rows, cols = np.nonzero(values > 0.5 * peak)
    if len(rows) < MIN_INK_PIXELS:
        return None
    extent = max(int(np.ptp(rows)), int(np.ptp(cols))) + 1
    centre_y, centre_x = (rows.min() + rows.max()) / 2, (cols.min() + cols.max()) / 2
    centre = (SIDE - 1) / 2
    if extent < EMNIST_MIN_EXTENT or max(abs(centre_y - centre), abs(centre_x - centre)) > EMNIST_MAX_OFF_CENTRE:
        return None
    return (values / peak).astype(np.float32)


def normalise(gray: np.ndarray) -> np.ndarray:
    """Grayscale page (either polarity) -> (28, 28) float32, white ink on black, EMNIST geometry."""
    passed = as_emnist(gray)
    return passed if passed is not None else to_glyph(find_ink(gray))
