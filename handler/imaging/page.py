"""Find the ink on a page: polarity (paper is what the border shows), sensor noise, shadows and
vignetting, the paper's level and the ink threshold; then what is not handwriting is dropped: printed box
and grid lines, dark scan borders and page edges, specks, and fragments of neighbouring letters cut by
the crop. Pure image code: no model, no I/O.

8-bit pages stay in integers and are measured from histograms; pages that need their lighting
flattened (or came as 16-bit or float) continue in float32. Both give the same numbers.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, replace

import numpy as np
from PIL import Image

from handler.imaging import ops
from handler.imaging.decode import MAX_WORK_SIDE, MIN_CONTRAST
from handler.imaging.errors import ErrorCode, ImageError

MIN_INK_PIXELS = 4
HALF_FROM = 192  # pages at least this large on both sides are read at half resolution when it resolves them:
HALF_MIN_HEIGHT = 40  # the tallest piece of ink is at least this many pixels high there ...
HALF_MIN_STROKE = 3.0  # ... and strokes at least this many pixels wide
UNEVEN_BORDER = 0.1  # brightness spread (border, then the lighting estimate) above which lighting is flattened
BACKGROUND_SIDE = 32  # resolution of the background estimate
OPENING = 15  # half the page: wider than any stroke, line or border, narrower than a shadow
SAMPLE_PIXELS = 16384  # statistics come from a subsample of about this many pixels
RULE_MIN_SIDE = 32  # smaller inputs are tight crops (digit fields): nothing in them is a printed line
LINE_FILL = 0.6  # a page has no printed line unless some row or column is at least this full of ink (tilt)
RULE_SPAN = 0.01  # a printed line or border runs from edge to edge (the crop cut through it): within 1%
PRINTED_EDGE = 0.2  # an empty form box: every line within the outer fifth of the page ...
PRINTED_THICKNESS = 0.15  # ... and all of them together thinner than this share of the side
COMB_SPAN = 0.5  # a comb field (a row of boxes, one letter each): two printed rules across half the page ...
COMB_LENGTH = 1.5  # ... each at least this many times as long as the boxes between them are tall ...
COMB_THIN = 0.12  # ... and thinner than this share of that height (not the bars of a written E) ...
COMB_BOXES = 2  # ... with the dividers of at least this many boxes running from one rule to the other
COMB_ASPECT = 2.0  # a page this much wider than tall may be a photo of a comb field, perhaps askew
TILTS = np.radians(np.arange(-4.0, 4.01, 0.25))  # printed lines are looked for this far askew, at most
STRAY_ELONGATION = 5.0  # a component this many times longer than wide ...
STRAY_THIN = 0.6  # ... and thinner than this share of the handwriting's strokes is a piece of a printed line
SPECK = 0.02  # components below this share of the largest one are specks (not of all the ink: a page of
# many small characters has no component with much of the ink)
FRAGMENT = 0.5  # components cut by the crop edge and smaller than this share of the largest are neighbours


@dataclass(frozen=True)
class Ink:
    """Where the ink is: ink brightness (``uint8`` 0-255 or ``float32`` 0-1, paper dark), the ink mask,
    and the paper level, ink peak and threshold (in 0-1 units)."""

    values: np.ndarray
    mask: np.ndarray
    background: float
    peak: float
    level: float
    parts: ops.Components | None = None  # the mask's connected components, when already found

    def crop(self, top: int, bottom: int, left: int, right: int) -> np.ndarray:
        """The ink in a box, as float32 0-1 with the paper at 0 and the peak at 1."""
        region = self.values[top : bottom + 1, left : right + 1]
        if region.dtype == np.uint8:
            region = region.astype(np.float32) / 255.0
        floor = (self.background + self.level) / 2  # halfway to the threshold: soft edges kept, paper texture dropped
        return np.clip((region - floor) / (self.peak - floor), 0.0, 1.0)


def find_ink(gray: np.ndarray) -> Ink:
    """Grayscale page (either polarity; uint8 or float32 0-1) -> :class:`Ink`, or ``NoInk``.

    A large page is read at half resolution first, a quarter of the pixels, and kept when its characters
    are still large and their strokes still thick there; otherwise (small writing, a fine pen, faint ink
    lost) it is read again at full resolution."""
    if min(gray.shape) >= HALF_FROM:
        try:
            ink = _find_ink(_halved(gray), blur=False)  # the 2x2 mean has averaged the noise already
        except ImageError:
            ink = None
        if ink is not None and _resolved(ink):
            return ink
    return _find_ink(gray)


def _halved(gray: np.ndarray) -> np.ndarray:
    """Each 2x2 block's mean (rounded, for 8-bit pages)."""
    if gray.dtype == np.uint8:
        return ops.pixels_of(ops.image_of(gray).reduce(2))
    height, width = gray.shape
    return ops.resize(gray, width // 2, height // 2, Image.Resampling.BOX)


def _resolved(ink: Ink) -> bool:
    """Whether the writing is drawn with enough pixels to read: the tallest piece of ink at least
    ``HALF_MIN_HEIGHT`` pixels and strokes at least ``HALF_MIN_STROKE`` wide."""
    parts = ink.parts
    if parts is None or len(parts) == 0:
        return False
    tallest = int((parts.bottom - parts.top).max()) + 1
    stroke = ops.relative_stroke_width(ink.mask) * max(ink.mask.shape)
    return tallest >= HALF_MIN_HEIGHT and stroke >= HALF_MIN_STROKE


def _find_ink(gray: np.ndarray, *, blur: bool = True) -> Ink:
    """:func:`find_ink` at the page's own resolution (``blur``: the 3x3 box blur against sensor noise)."""
    height, width = gray.shape
    if max(height, width) > MAX_WORK_SIDE:
        factor = MAX_WORK_SIDE / max(height, width)
        as_float = gray.astype(np.float32) / 255.0 if gray.dtype == np.uint8 else gray
        size = max(1, round(width * factor)), max(1, round(height * factor))
        gray = ops.resize(as_float, *size, Image.Resampling.BOX)
        height, width = gray.shape
    frame = max(1, round(0.05 * min(height, width)))
    sampled = None  # the histogram of the ink's sample, when the polarity check already counted it
    if gray.dtype == np.uint8:
        ink, sampled = _ink_u8(gray, blur=blur)
    else:
        ink = 1.0 - gray if np.median(_sample(gray)) > 0.5 else gray
        if min(height, width) >= 64:  # photos and scans: a 3x3 box blur turns noise and specks into faint haze
            ink, _ = _ink_u8(np.round(ink * 255).astype(np.uint8), polarity_known=True, blur=blur)
    if ink.dtype == np.uint8 and min(height, width) >= 64:
        counts = ops.histogram(ops.border(ink, frame))
        if ops.percentile_u8(counts, 95) - ops.percentile_u8(counts, 5) >= UNEVEN_BORDER * 255:
            flattened = _flatten_background(ink)
            ink, sampled = flattened, sampled if flattened is ink else None
    return clear_page(_threshold(ink, sampled))


def _sample(values: np.ndarray) -> np.ndarray:
    """About SAMPLE_PIXELS pixels spread over the page: enough for its median."""
    step = max(1, int(np.sqrt(values.size / SAMPLE_PIXELS)))
    return values[::step, ::step]


def _ink_u8(
    gray: np.ndarray, *, polarity_known: bool = False, blur: bool = True
) -> tuple[np.ndarray, np.ndarray | None]:
    """8-bit page -> 8-bit ink: inverted when the paper (most of the page: its median) is light, box-blurred
    when large. Not the border's median: a form cell's dark frame and box lines fill the border. Also the
    histogram of the ink's :func:`_sample` when it was counted and still holds (not blurred since)."""
    if polarity_known:
        counts = None
    else:
        counts = ops.histogram(_sample(gray))
        if ops.median_u8(counts) > 0.5:
            gray, counts = 255 - gray, counts[::-1]
    if blur and min(gray.shape) >= 64:
        gray, counts = ops.box_blur3(gray), None
    return gray, counts


def _flatten_background(ink_u8: np.ndarray) -> np.ndarray:
    """Remove shadows and vignetting: subtract a grey-scale opening computed at low resolution, wide enough
    to pass over strokes, printed lines and scan borders, so only the lighting is subtracted. Where the
    opening is flat (the border was uneven because of lines or borders, not light) the page is left as it is."""
    ink = ink_u8.astype(np.float32) / 255.0
    height, width = ink.shape
    scale = BACKGROUND_SIDE / max(height, width)
    small = ops.resize(ink, max(8, round(width * scale)), max(8, round(height * scale)), Image.Resampling.BOX)
    opened = ops.rank_filter(ops.rank_filter(small, OPENING, np.minimum), OPENING, np.maximum)
    low, high = np.percentile(opened, (5, 95))  # one call: each costs more than the filters before it
    if float(high - low) < UNEVEN_BORDER:
        return ink_u8
    background = ops.resize(opened, width, height, Image.Resampling.BILINEAR)
    return np.clip(ink - background, 0.0, 1.0)


def _threshold(ink: np.ndarray, sampled: np.ndarray | None = None) -> Ink:
    """Paper level (median of a subsample), ink peak, and Otsu's threshold between them (``sampled``: the
    8-bit subsample's histogram, if already counted)."""
    sample = _sample(ink)
    if ink.dtype == np.uint8:
        values = ops.U8_AS_FLOAT
        counts = ops.histogram(sample) if sampled is None else sampled
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


def _rules(mask: np.ndarray) -> np.ndarray:
    """Pixels of straight lines running edge to edge (printed box and grid lines, scan borders, page
    edges): horizontal runs found after closing 1-pixel steps and gaps, so slightly tilted lines count."""
    width = mask.shape[1]
    found = ops.runs(ops.grow(mask))
    margin = max(1, round(RULE_SPAN * width))
    edge_to_edge = (found.start <= margin) & (found.stop >= width - 1 - margin)
    lines = np.zeros_like(mask)
    if not edge_to_edge.any():
        return lines
    ops.paint_runs(lines, ops.Runs(found.row[edge_to_edge], found.start[edge_to_edge], found.stop[edge_to_edge]))
    return lines & mask


@dataclass(frozen=True)
class _Band:
    """Rows ``top``..``bottom`` holding a long horizontal rule over columns ``left``..``right``."""

    top: int
    bottom: int
    left: int
    right: int


def _comb(mask: np.ndarray) -> np.ndarray:
    """Pixels of a comb field's printed lines: two long thin parallel rules and the dividers between its
    boxes, which need not reach the page's edges (a field photographed with paper around it)."""
    _height, width = mask.shape
    grown = ops.grow(mask)
    found = ops.runs(grown)
    long = found.length >= COMB_SPAN * width
    lines = np.zeros_like(mask)
    if not long.any():
        return lines
    rows, starts, stops = found.row[long], found.start[long], found.stop[long]
    breaks = np.flatnonzero(np.diff(rows) > 1) + 1
    bands = [
        _Band(int(r[0]), int(r[-1]), int(a.min()), int(b.max()))
        for r, a, b in zip(np.split(rows, breaks), np.split(starts, breaks), np.split(stops, breaks), strict=True)
    ]
    if len(bands) < 2:
        return lines
    down = ops.runs(np.ascontiguousarray(grown.T))  # vertical runs: row is the column, start/stop are rows
    for upper, lower in itertools.pairwise(bands):
        gap = lower.top - upper.bottom - 1
        left, right = max(upper.left, lower.left), min(upper.right, lower.right)
        thickest = max(upper.bottom - upper.top, lower.bottom - lower.top) + 1
        if gap <= 0 or right - left + 1 < COMB_LENGTH * gap or thickest > COMB_THIN * gap:
            continue
        spans = (
            (down.start <= upper.bottom + 1) & (down.stop >= lower.top - 1) & (down.row >= left) & (down.row <= right)
        )
        columns = np.unique(down.row[spans])
        if columns.size == 0 or int((np.diff(columns) > 1).sum()) + 1 < COMB_BOXES + 1:
            continue
        lines[upper.top : upper.bottom + 1, left : right + 1] = True
        lines[lower.top : lower.bottom + 1, left : right + 1] = True
        lines[upper.top : lower.bottom + 1, columns] = True
    return lines & mask


@dataclass(frozen=True)
class _Levelled:
    """A mask's pixels (``rows``, ``cols``) with the rows they move to when the mask is sheared by ``tilt``
    (radians, within ``TILTS``): the tilt under which some row holds the most of them (``fullest``), i.e.
    the tilt of its longest straight line."""

    rows: np.ndarray
    cols: np.ndarray
    tilt: float
    fullest: int
    level_rows: np.ndarray

    @classmethod
    def of(cls, mask: np.ndarray) -> _Levelled:
        rows, cols = np.nonzero(mask)
        if rows.size == 0:
            return cls(rows, cols, 0.0, 0, rows)
        fullest = _fullest_rows(mask, TILTS)
        best = int(np.argmax(fullest))
        tilt = float(TILTS[best])
        return cls(rows, cols, tilt, int(fullest[best]), _shear(rows, cols, tilt))


def _fullest_rows(mask: np.ndarray, tilts: np.ndarray) -> np.ndarray:
    """For each tilt, the most pixels any row holds once the mask is sheared by it (:func:`_shear`'s rows).

    A shear moves whole runs of columns by the same amount (a few dozen distinct shifts per tilt), so each
    sheared row count is a sum of per-row sums over those column spans, read off one cumulative sum of the
    mask: work per row and span, not per pixel and tilt."""
    height, width = mask.shape
    shifts = np.round(np.arange(width) * np.tan(tilts)[:, np.newaxis]).astype(np.int64)
    starts_here = np.ones_like(shifts, dtype=bool)
    starts_here[:, 1:] = shifts[:, 1:] != shifts[:, :-1]
    tilt, first = np.nonzero(starts_here)  # each span of equal shift: its tilt and first column, in order
    same_tilt_next = np.append(tilt[1:] == tilt[:-1], False)
    stop = np.where(same_tilt_next, np.append(first[1:], 0), width)
    across = np.zeros((height, width + 1), dtype=np.int32)
    np.cumsum(mask, axis=1, out=across[:, 1:])
    sums = across[:, stop] - across[:, first]  # (rows, spans)
    band = height + int(shifts.max() - shifts.min())
    offset = int(shifts.max()) - shifts[tilt, first] + band * tilt  # where each span's row 0 lands
    index = np.arange(height)[:, np.newaxis] + offset
    counts = np.bincount(index.ravel(), weights=sums.ravel(), minlength=band * len(tilts))
    return counts.reshape(len(tilts), band).max(axis=1).astype(np.int64)


def _shear(rows: np.ndarray, cols: np.ndarray, tilt: float) -> np.ndarray:
    """Rows moved by ``tilt`` along the columns, shifted to start at 0."""
    sheared = rows - np.round(cols * np.tan(tilt)).astype(np.int64)
    return sheared - sheared.min()


def _tilted_rules(mask: np.ndarray, level: _Levelled) -> np.ndarray:
    """:func:`_rules` on a page photographed a few degrees askew (``level``: its pixels levelled): a rule is
    a run as long as the page is wide (less ``RULE_SPAN`` at each end) once the fullest row is level."""
    width = mask.shape[1]
    if level.tilt == 0.0 or level.fullest < LINE_FILL * width:
        return np.zeros_like(mask)
    straight = np.zeros((int(level.level_rows.max()) + 1, width), dtype=bool)
    straight[level.level_rows, level.cols] = True
    found = ops.runs(ops.grow(straight))
    long = found.length >= (1 - 2 * RULE_SPAN) * width
    runs_mask = np.zeros_like(straight)
    ops.paint_runs(runs_mask, ops.Runs(found.row[long], found.start[long], found.stop[long]))
    lines = np.zeros_like(mask)
    lines[level.rows, level.cols] = runs_mask[level.level_rows, level.cols]
    return lines


def _tilted_comb(mask: np.ndarray, level: _Levelled) -> np.ndarray:
    """:func:`_comb` on a photo taken a few degrees askew (``level``: its pixels levelled): the ink is
    sheared by the rules' tilt (rows, then columns: a rotation, for small angles), the rules are found, and
    each ink pixel keeps the verdict of where it went."""
    if level.fullest < COMB_SPAN * mask.shape[1]:
        return np.zeros_like(mask)
    if level.tilt == 0.0:
        return _comb(mask)
    straight_rows = level.level_rows
    straight_cols = _shear(level.cols, -straight_rows, level.tilt)
    straight = np.zeros((int(straight_rows.max()) + 1, int(straight_cols.max()) + 1), dtype=bool)
    straight[straight_rows, straight_cols] = True
    found = _comb(straight)
    lines = np.zeros_like(mask)
    lines[level.rows, level.cols] = found[straight_rows, straight_cols]
    return lines


def _printed(lines: np.ndarray, axis: int) -> bool:
    """Lines that look printed rather than written: thin, and all near the page's edges (a box or border)."""
    side = lines.shape[1 - axis]
    at = np.flatnonzero(lines.any(axis=axis))
    if at.size == 0:
        return True
    near_edges = bool(((at < PRINTED_EDGE * side) | (at >= (1 - PRINTED_EDGE) * side)).all())
    return near_edges and lines.sum() / lines.shape[axis] <= PRINTED_THICKNESS * side


def _touches_edge(found: ops.Components, shape: tuple[int, int]) -> np.ndarray:
    height, width = shape
    return (found.top == 0) | (found.left == 0) | (found.bottom == height - 1) | (found.right == width - 1)


def _paper_where(ink: Ink, drop: np.ndarray) -> np.ndarray:
    values = ink.values.copy()
    values[drop] = round(ink.background * 255) if values.dtype == np.uint8 else ink.background
    return values


def clear_page(ink: Ink) -> Ink:
    """Drop what is not the handwriting. Printed lines and borders are found on faint ink too (a grey
    line is still a line) and removed only on a framed page, where some ink is left clear of the edges
    once they are gone, so a tight crop's strokes are never taken for lines; the page is then thresholded
    again without them. Then specks, and fragments of neighbouring letters that the crop cut through."""
    if min(ink.mask.shape) < RULE_MIN_SIDE:
        return ink
    found_rules = _printed_rules(ink.values > _as_values(ink, (ink.background + ink.level) / 2))
    if found_rules is not None and found_rules[0].any():
        rules, across, down = found_rules
        lines = ops.grow(rules)  # with their soft edges
        rest = ops.components(ink.mask & ~lines)
        on_edge = _touches_edge(rest, ink.mask.shape)
        if len(rest) and (~on_edge).any() and rest.area[~on_edge].max() >= FRAGMENT * rest.area.max():
            ink = _threshold(_paper_where(ink, lines))
        elif rest.area.sum() < SPECK * rules.sum() and _printed(across, axis=1) and _printed(down, axis=0):
            raise ImageError(ErrorCode.NO_INK, "no handwriting found: only printed lines or borders")
    found = ops.components(ink.mask)
    on_edge = _touches_edge(found, ink.mask.shape)
    inside = found.area[~on_edge]
    if inside.size == 0 or inside.max() < FRAGMENT * found.area.max():
        return replace(ink, parts=found)  # the handwriting itself reaches the edges: a tight crop, leave it whole
    keep = (found.area >= SPECK * found.area.max()) & (~on_edge | (found.area >= FRAGMENT * inside.max()))
    keep &= ~_stray_lines(found, ink.mask)
    if keep.all():
        return replace(ink, parts=found)
    cleaned = found.mask(keep, ink.mask.shape)
    values = _paper_where(ink, ops.grow(ink.mask & ~cleaned) & ~cleaned)
    return Ink(values, cleaned, ink.background, ink.peak, ink.level, found.subset(keep))


def _printed_rules(faint: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Printed lines, borders and comb boxes in the faint-ink mask: (all, the horizontal ones, the vertical
    ones); None when nothing on the page can be one (no row or column nearly full of ink, no ink on two
    opposite edges, not shaped like a comb field), as on most uploads."""
    height, width = faint.shape
    as_bytes = faint.view(np.uint8)  # a line crosses the page: some row or column is nearly all ink
    fullest_row = as_bytes.sum(axis=1, dtype=np.int32).max()
    full = not (fullest_row < LINE_FILL * width and as_bytes.sum(axis=0, dtype=np.int32).max() < LINE_FILL * height)
    # A line crossing a page photographed askew fills no row, but still reaches both opposite edges.
    field = width >= COMB_ASPECT * height  # a comb field, perhaps photographed askew
    side_to_side = bool(faint[:, 0].any() and faint[:, -1].any())
    top_to_bottom = bool(faint[0].any() and faint[-1].any())
    if not (full or field or side_to_side or top_to_bottom or fullest_row >= COMB_SPAN * width):
        return None
    across, down = (_rules(faint), _rules(faint.T).T) if full else (np.zeros_like(faint), np.zeros_like(faint))
    level = _Levelled.of(faint) if field or side_to_side else None  # levelled once, for rules and comb alike
    if level is not None and side_to_side:
        across |= _tilted_rules(faint, level)
    if top_to_bottom:
        down |= _tilted_rules(faint.T, _Levelled.of(faint.T)).T
    rules = across | down
    if level is not None and field:  # straighten its rules to find them
        rules |= _tilted_comb(faint, level)
    elif fullest_row >= COMB_SPAN * width:
        rules |= _comb(faint)
    return rules, across, down


def _stray_lines(found: ops.Components, mask: np.ndarray) -> np.ndarray:
    """Pieces of printed lines that the rules missed (a box line leaving a tilted crop through a side):
    long, straight and much thinner than the handwriting's strokes. The largest component is never one."""
    heights, widths = found.bottom - found.top + 1, found.right - found.left + 1
    long_side, short_side = np.maximum(heights, widths), np.minimum(heights, widths)
    stray = long_side >= STRAY_ELONGATION * short_side
    stray[int(np.argmax(found.area))] = False
    if not stray.any():
        return stray
    stroke = ops.relative_stroke_width(mask) * max(mask.shape)  # the ink's stroke width, in pixels
    return stray & (found.area / long_side <= STRAY_THIN * stroke)


def _as_values(ink: Ink, level: float) -> float:
    """A level in 0-1 units, in the units of ``ink.values``."""
    return level * 255 if ink.values.dtype == np.uint8 else level
