"""Find the ink on a page: polarity (paper is what the border shows), sensor noise, shadows and
vignetting, the paper's level and the ink threshold. Pure image code: no model, no I/O.

8-bit pages stay in integers and are measured from histograms; pages that need their lighting
flattened (or came as 16-bit or float) continue in float32. Both give the same numbers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from handler.imaging import ops
from handler.imaging.decode import MAX_WORK_SIDE, MIN_CONTRAST
from handler.imaging.errors import ImageError
from handler.records import ErrorCode

MIN_INK_PIXELS = 4
UNEVEN_BORDER = 0.1  # border brightness spread above which lighting is flattened first
BACKGROUND_SIDE = 64  # resolution of the background estimate
SAMPLE_PIXELS = 16384  # statistics come from a subsample of about this many pixels


@dataclass(frozen=True)
class Ink:
    """Where the ink is: ink brightness (``uint8`` 0-255 or ``float32`` 0-1, paper dark), the ink mask,
    and the paper level, ink peak and threshold (in 0-1 units)."""

    values: np.ndarray
    mask: np.ndarray
    background: float
    peak: float
    level: float

    def crop(self, top: int, bottom: int, left: int, right: int) -> np.ndarray:
        """The ink in a box, as float32 0-1 with the paper at 0 and the peak at 1."""
        region = self.values[top : bottom + 1, left : right + 1]
        if region.dtype == np.uint8:
            region = region.astype(np.float32) / 255.0
        floor = (self.background + self.level) / 2  # halfway to the threshold: soft edges kept, paper texture dropped
        return np.clip((region - floor) / (self.peak - floor), 0.0, 1.0)


def find_ink(gray: np.ndarray) -> Ink:
    """Grayscale page (either polarity; uint8 or float32 0-1) -> :class:`Ink`, or ``NoInk``."""
    height, width = gray.shape
    if max(height, width) > MAX_WORK_SIDE:
        factor = MAX_WORK_SIDE / max(height, width)
        as_float = gray.astype(np.float32) / 255.0 if gray.dtype == np.uint8 else gray
        size = max(1, round(width * factor)), max(1, round(height * factor))
        gray = ops.resize(as_float, *size, Image.Resampling.BOX)
        height, width = gray.shape
    frame = max(1, round(0.05 * min(height, width)))
    if gray.dtype == np.uint8:
        ink = _ink_u8(gray, frame)
    else:
        ink = 1.0 - gray if np.median(ops.border(gray, frame)) > 0.5 else gray
        if min(height, width) >= 64:  # photos and scans: a 3x3 box blur turns noise and specks into faint haze
            ink = _ink_u8(np.round(ink * 255).astype(np.uint8), frame, polarity_known=True)
    if ink.dtype == np.uint8 and min(height, width) >= 64:
        counts = ops.histogram(ops.border(ink, frame))
        if ops.percentile_u8(counts, 95) - ops.percentile_u8(counts, 5) >= UNEVEN_BORDER * 255:
            ink = _flatten_background(ink.astype(np.float32) / 255.0)
    return _threshold(ink)


def _ink_u8(gray: np.ndarray, frame: int, *, polarity_known: bool = False) -> np.ndarray:
    """8-bit page -> 8-bit ink: inverted when the border (paper) is light, box-blurred when large."""
    if not polarity_known and ops.median_u8(ops.histogram(ops.border(gray, frame))) > 0.5:
        gray = 255 - gray
    if min(gray.shape) >= 64:
        gray = ops.box_blur3(gray)
    return gray


def _flatten_background(ink: np.ndarray) -> np.ndarray:
    """Remove shadows and vignetting: subtract a grey-scale opening computed at low resolution."""
    height, width = ink.shape
    scale = BACKGROUND_SIDE / max(height, width)
    small = Image.fromarray(ink).resize(
        (max(8, round(width * scale)), max(8, round(height * scale))), Image.Resampling.BOX
    )
    opened = ops.rank_filter(ops.rank_filter(np.asarray(small), 9, np.min), 9, np.max)
    background = np.asarray(Image.fromarray(opened).resize((width, height), Image.Resampling.BILINEAR))
    return np.clip(ink - background, 0.0, 1.0)


def _threshold(ink: np.ndarray) -> Ink:
    """Paper level (median of a subsample), ink peak, and Otsu's threshold between them."""
    step = max(1, int(np.sqrt(ink.size / SAMPLE_PIXELS)))
    sample = ink[::step, ::step]
    if ink.dtype == np.uint8:
        values = ops.U8_AS_FLOAT
        counts = ops.histogram(sample)
        background = ops.median_u8(counts)
        peak = float(values[int(ink.max())])
    else:
        background = float(np.median(sample))
        peak = float(ink.max())  # after the blur: a stroke, not a stray noisy pixel
    if peak - background < MIN_CONTRAST:
        raise ImageError(ErrorCode.NO_INK, "no handwriting found: the image is blank or has almost no contrast")
    if ink.dtype == np.uint8:
        bins = ops.otsu_bins(np.clip((values - background) / (peak - background), 0, 1))
        threshold = ops.otsu_threshold(np.bincount(bins, weights=counts, minlength=ops.OTSU_BINS))
        level = background + threshold * (peak - background)
        mask = ink >= int(np.searchsorted(values, np.float32(level), side="right"))  # ink/255 > level, exactly
    else:
        normalised = np.clip((sample - background) / (peak - background), 0, 1)
        threshold = ops.otsu_threshold(np.bincount(ops.otsu_bins(normalised).ravel(), minlength=ops.OTSU_BINS))
        level = background + threshold * (peak - background)
        mask = ink > level
    if np.count_nonzero(mask) < MIN_INK_PIXELS:
        raise ImageError(ErrorCode.NO_INK, "no handwriting found: too little ink to read")
    return Ink(ink, mask, background, peak, level)
