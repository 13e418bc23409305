"""Image primitives: histogram statistics, thresholds, filters, resampling. Where a vision library would plug in.

8-bit images are measured from one 256-bin histogram (medians, percentiles, Otsu) instead of
sorting their pixels; the final blur and resize to 28x28 is one precomputed linear map.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np
from PIL import Image

OTSU_BINS = 64


def border(values: np.ndarray, frame: int) -> np.ndarray:
    return np.concatenate(
        [values[:frame].ravel(), values[-frame:].ravel(), values[:, :frame].ravel(), values[:, -frame:].ravel()]
    )


def image_of(values: np.ndarray) -> Image.Image:
    """A Pillow image over a uint8 (mode L) or float32 (mode F) array, 2-D (a 1-D one is one row):
    ``Image.fromarray`` without its generic type checks, which cost as much as the small operations it is
    made for."""
    values = np.ascontiguousarray(values)
    mode = "L" if values.dtype == np.uint8 else "F"
    height, width = values.shape if values.ndim == 2 else (1, values.size)
    return Image.frombuffer(mode, (width, height), values, "raw", mode, 0, 1)


def pixels_of(image: Image.Image) -> np.ndarray:
    """``np.asarray`` of a mode L or F image (read-only, as that is), without the array-interface detour."""
    dtype = np.uint8 if image.mode == "L" else np.float32
    return np.frombuffer(image.tobytes(), dtype).reshape(image.size[1], image.size[0])


def histogram(values: np.ndarray) -> np.ndarray:
    """Counts of each uint8 value: the one pass every 8-bit statistic below is read from. Pillow's counts
    the bytes as they are; ``np.bincount`` first widens every one to 64 bits (twice as slow)."""
    return np.array(image_of(values).histogram(), dtype=np.int64)


def _ranked(cumulative: np.ndarray, rank: int) -> int:
    """The value at 0-based ``rank`` in sorted order, from a cumulative histogram."""
    return int(np.searchsorted(cumulative, rank, side="right"))


U8_AS_FLOAT = np.arange(256, dtype=np.float32) / 255.0  # every 8-bit value as the float32 the float path sees


def median_u8(counts: np.ndarray) -> float:
    """Median of the histogrammed 8-bit values in 0-1, exactly as ``np.median`` of their float32 values
    gives it (the mean of the middle two, in float32)."""
    cumulative = np.cumsum(counts)
    n = int(cumulative[-1])
    low, high = _ranked(cumulative, (n - 1) // 2), _ranked(cumulative, n // 2)
    return float((U8_AS_FLOAT[low] + U8_AS_FLOAT[high]) / np.float32(2))


def percentile_u8(counts: np.ndarray, q: float) -> float:
    """``np.percentile`` (linear interpolation) of the histogrammed values."""
    cumulative = np.cumsum(counts)
    position = (int(cumulative[-1]) - 1) * q / 100
    low = int(np.floor(position))
    below, above = _ranked(cumulative, low), _ranked(cumulative, min(low + 1, int(cumulative[-1]) - 1))
    return below + (above - below) * (position - low)


OTSU_EDGES = np.linspace(0.0, 1.0, OTSU_BINS + 1)
OTSU_CENTRES = (OTSU_EDGES[:-1] + OTSU_EDGES[1:]) / 2


def otsu_threshold(weights: np.ndarray) -> float:
    """Otsu's threshold in [0, 1] from a histogram of ``OTSU_BINS`` equal bins over [0, 1]."""
    weights = weights.astype(np.float64)
    w0 = np.cumsum(weights)
    w1 = w0[-1] - w0
    m0 = np.cumsum(weights * OTSU_CENTRES)
    mean0 = np.divide(m0, w0, out=np.zeros_like(m0), where=w0 > 0)
    mean1 = np.divide(m0[-1] - m0, w1, out=np.zeros_like(m0), where=w1 > 0)
    between = w0 * w1 * (mean0 - mean1) ** 2
    return float(OTSU_EDGES[int(np.argmax(between)) + 1])


def otsu_bins(values: np.ndarray) -> np.ndarray:
    """Which of the ``OTSU_BINS`` bins each value in [0, 1] falls in."""
    return np.clip((values * OTSU_BINS).astype(np.int64), 0, OTSU_BINS - 1)


def box_blur3(values: np.ndarray) -> np.ndarray:
    """Pillow's ``BoxBlur(1)`` on a uint8 image, byte for byte (edges repeated, each pass rounded), several
    times faster than Pillow's own.

    Pillow rounds each pass in 8.24 fixed point, ``(sum * (2**24 // 3) + 2**23) >> 24``, which for a sum of
    three bytes (0-765) is exactly ``(sum + 1) // 3``: both passes stay in uint16, and numpy divides by a
    constant with a multiply and a shift."""
    sums = _sum3(values.astype(np.uint16), axis=1)
    sums += 1
    sums //= 3
    both = _sum3(sums, axis=0)
    both += 1
    both //= 3
    return both.astype(np.uint8)


def _sum3(values: np.ndarray, axis: int) -> np.ndarray:
    """Each pixel plus its two neighbours along ``axis``, the edge pixel counted again past the edge."""
    along = values if axis == 0 else values.T
    out = np.empty_like(along)
    if len(along) == 1:
        np.multiply(along, 3, out=out)
    else:
        np.add(along[:-2], along[1:-1], out=out[1:-1])
        out[1:-1] += along[2:]
        out[0] = 2 * along[0] + along[1]
        out[-1] = along[-2] + 2 * along[-1]
    return out if axis == 0 else out.T


def trimmed_extent(profile: np.ndarray, trim: float = 0.005) -> tuple[int, int]:
    """First and last index holding the central mass, so a stray speck does not stretch the crop."""
    cumulative = np.cumsum(profile) / profile.sum()
    start = int(np.searchsorted(cumulative, trim))
    stop = int(np.searchsorted(cumulative, 1.0 - trim))
    return start, min(stop, len(profile) - 1)


def relative_stroke_width(mask: np.ndarray) -> float:
    """2 * area / perimeter approximates stroke width for thin strokes; relative to the glyph size. A pixel
    is interior when it and its 4 neighbours are ink (pixels on the frame never are)."""
    area = int(np.count_nonzero(mask))
    core = mask[1:-1, 1:-1]
    interior = core & mask[:-2, 1:-1] & mask[2:, 1:-1] & mask[1:-1, :-2] & mask[1:-1, 2:]
    perimeter = area - int(np.count_nonzero(interior))
    return 2.0 * area / max(perimeter, 1) / max(mask.shape)


def grow(mask: np.ndarray) -> np.ndarray:
    """The mask and its 8 neighbours (a 3x3 binary dilation): a stroke's soft edges, one pixel out."""
    grown = mask.copy()
    grown[1:] |= mask[:-1]
    grown[:-1] |= mask[1:]
    grown[:, 1:] |= grown[:, :-1].copy()
    grown[:, :-1] |= grown[:, 1:].copy()
    return grown


def resize(values: np.ndarray, width: int, height: int, resample: Image.Resampling) -> np.ndarray:
    return pixels_of(image_of(values.astype(np.float32, copy=False)).resize((width, height), resample))


def pad_edge(values: np.ndarray, half: int) -> np.ndarray:
    """``np.pad(values, half, mode="edge")`` for a 2-D array, without its generic machinery (4x as long)."""
    height, width = values.shape
    padded = np.empty((height + 2 * half, width + 2 * half), dtype=values.dtype)
    padded[half : half + height, half : half + width] = values
    padded[:half, half : half + width] = values[0]
    padded[half + height :, half : half + width] = values[-1]
    padded[:, :half] = padded[:, half : half + 1]
    padded[:, half + width :] = padded[:, half + width - 1 : half + width]
    return padded


def rank_filter(values: np.ndarray, size: int, reduce: np.ufunc) -> np.ndarray:
    """Square min or max filter (grey-scale erosion or dilation; ``reduce`` is ``np.minimum`` or
    ``np.maximum``), separable, edges padded by replication: ``size - 1`` shifted reductions per axis."""
    half = size // 2
    padded = pad_edge(values, half)
    height, width = values.shape
    rows = padded[:, :width].copy()
    for shift in range(1, size):
        reduce(rows, padded[:, shift : shift + width], out=rows)
    out = rows[:height].copy()
    for shift in range(1, size):
        reduce(out, rows[shift : shift + height], out=out)
    return out.astype(np.float32, copy=False)


def gaussian_matrix(side: int, sigma: float) -> np.ndarray:
    """The separable Gaussian blur of one axis (zero outside the image) as a (side, side) matrix."""
    radius = int(3 * sigma)
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    taps /= taps.sum()
    matrix = np.zeros((side, side))
    for offset, weight in zip(range(-radius, radius + 1), taps, strict=True):
        matrix += weight * np.eye(side, k=offset)
    return matrix


def _bicubic(x: np.ndarray) -> np.ndarray:
    """Pillow's bicubic kernel (a = -0.5)."""
    a, x = -0.5, np.abs(x)
    near = ((a + 2) * x - (a + 3)) * x * x + 1
    far = (((x - 5) * x + 8) * x - 4) * a
    return np.where(x < 1, near, np.where(x < 2, far, 0.0))


def _box(x: np.ndarray) -> np.ndarray:
    return ((x > -0.5) & (x <= 0.5)).astype(np.float64)


KERNELS = {Image.Resampling.BICUBIC: (_bicubic, 2.0), Image.Resampling.BOX: (_box, 0.5)}


def resize_matrix(side_in: int, side_out: int, resample: Image.Resampling) -> np.ndarray:
    """Pillow's resize of one axis as a (side_out, side_in) float32 matrix: its own taps (``precompute_coeffs``
    in Resample.c: the kernel widened by the reduction, each output's weights normalised), so a resize
    can be folded into other linear maps. A test checks it against Pillow resizing unit impulses."""
    kernel, support = KERNELS[resample]
    scale = side_in / side_out
    widen = max(scale, 1.0)
    support *= widen
    taps = int(np.ceil(support)) * 2 + 1
    centre = (np.arange(side_out) + 0.5) * scale
    first = np.maximum((centre - support + 0.5).astype(np.int64), 0)  # C's truncation, as Pillow's
    stop = np.minimum((centre + support + 0.5).astype(np.int64), side_in)
    at = first[:, np.newaxis] + np.arange(taps)
    weights = np.where(at < stop[:, np.newaxis], kernel((at - centre[:, np.newaxis] + 0.5) / widen), 0.0)
    total = weights.sum(axis=1, keepdims=True)
    weights = np.divide(weights, total, out=np.zeros_like(weights), where=total != 0)
    matrix = np.zeros((side_out, side_in + taps), dtype=np.float32)
    matrix[np.arange(side_out)[:, np.newaxis], at] = weights
    return matrix[:, :side_in]


@cache
def blur_and_shrink(side_in: int, side_out: int, sigma: float) -> np.ndarray:
    """One (side_out, side_in) map for 'Gaussian blur, then bicubic resize': apply as M @ image @ M.T."""
    return (resize_matrix(side_in, side_out, Image.Resampling.BICUBIC) @ gaussian_matrix(side_in, sigma)).astype(
        np.float32
    )


@dataclass(frozen=True)
class Runs:
    """Horizontal runs of a mask: row, first and last column (inclusive) of each, in raster order."""

    row: np.ndarray
    start: np.ndarray
    stop: np.ndarray

    @property
    def length(self) -> np.ndarray:
        return self.stop - self.start + 1


def runs(mask: np.ndarray) -> Runs:
    """Run-length encode a boolean mask row by row (vectorised: one pass over the pixels, no Python loop).

    Each row is padded with a blank pixel at both ends, so on the flattened mask the changes alternate:
    a run's start, then its end."""
    height, width = mask.shape
    padded = np.zeros((height, width + 2), dtype=bool)
    padded[:, 1:-1] = mask
    flat = padded.ravel()
    changes = np.flatnonzero(flat[1:] != flat[:-1])
    starts, stops = changes[0::2] + 1, changes[1::2]
    row = (starts // (width + 2)).astype(np.int32)
    return Runs(
        row, (starts - row * (width + 2) - 1).astype(np.int32), (stops - row * (width + 2) - 1).astype(np.int32)
    )


@dataclass(frozen=True)
class Components:
    """8-connected components of a mask: the runs, each run's component, and per component its box and area."""

    runs: Runs
    of_run: np.ndarray
    top: np.ndarray
    bottom: np.ndarray
    left: np.ndarray
    right: np.ndarray
    area: np.ndarray

    def __len__(self) -> int:
        return len(self.area)

    def subset(self, keep: np.ndarray) -> Components:
        """Only the components where ``keep`` is true, renumbered in order."""
        selected = keep[self.of_run]
        number = np.cumsum(keep) - 1
        kept = Runs(self.runs.row[selected], self.runs.start[selected], self.runs.stop[selected])
        return Components(
            kept,
            number[self.of_run[selected]],
            self.top[keep],
            self.bottom[keep],
            self.left[keep],
            self.right[keep],
            self.area[keep],
        )

    def mask(self, keep: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
        """The pixels of the components where ``keep`` (a boolean per component) is true."""
        out = np.zeros(shape, dtype=bool)
        selected = keep[self.of_run]
        paint_runs(out, Runs(self.runs.row[selected], self.runs.start[selected], self.runs.stop[selected]))
        return out


def paint_runs(out: np.ndarray, selected: Runs) -> None:
    """Set the pixels of ``selected`` runs in ``out``: their flat indices, built run by run without a loop
    (work per painted pixel, not per pixel of the page)."""
    lengths = (selected.stop - selected.start + 1).astype(np.int64)
    if lengths.size == 0:
        return
    firsts = selected.row.astype(np.int64) * out.shape[1] + selected.start
    ends = np.cumsum(lengths)
    np.put(out, np.arange(ends[-1]) + np.repeat(firsts - (ends - lengths), lengths), True)


PYTHON_UNION_FIND = 4000  # runs; beyond this (a page of noise) the vectorised label propagation is faster


def _union_find(n: int, first: np.ndarray, last: np.ndarray) -> np.ndarray:
    """Union-find over runs: run i touches runs first[i]..last[i]-1 of the next row. Roots are the smallest
    run index of their component.

    Most runs of a stroke touch exactly one run below, which touches only them: such chains are followed in
    numpy (pointer jumping to each chain's first run), and only the joints (forks, merges) go through a
    plain Python union-find, a few dozen unions on a page instead of one per run."""
    below = last - first
    above = np.cumsum(np.bincount(first, minlength=n + 1) - np.bincount(last, minlength=n + 1))[:n]
    chained = below == 1
    chained[chained] = above[first[chained]] == 1
    ids = np.arange(n)
    head = ids.copy()
    head[first[chained]] = np.flatnonzero(chained)
    while True:
        jumped = head[head]
        if (jumped == head).all():
            break
        head = jumped
    parent = list(range(n))

    def root(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    heads = head.tolist()
    for i in np.flatnonzero(~chained & (below > 0)).tolist():
        for j in range(int(first[i]), int(last[i])):
            a, b = root(heads[i]), root(heads[j])
            if a != b:
                parent[max(a, b)] = min(a, b)
    starts = np.flatnonzero(head == ids)  # each chain's first run (its own head), in order
    lookup = np.empty(n, dtype=np.int64)
    lookup[starts] = [root(a) for a in starts.tolist()]
    return lookup[head]


def _propagate_labels(n: int, first: np.ndarray, last: np.ndarray) -> np.ndarray:
    """The same roots by vectorised label propagation: each run takes the smallest label among itself and
    its neighbours, then labels follow labels (pointer jumping), until nothing changes."""
    count = np.maximum(last - first, 0)
    left_ids = np.repeat(np.arange(n), count)
    offsets = np.arange(int(count.sum())) - np.repeat(np.cumsum(count) - count, count)
    right_ids = np.repeat(first, count) + offsets
    parent = np.arange(n)
    if len(left_ids) == 0:
        return parent
    source = np.concatenate([left_ids, right_ids])
    target = np.concatenate([right_ids, left_ids])
    order = np.argsort(source, kind="stable")
    source, target = source[order], target[order]
    starts = np.flatnonzero(np.append(True, source[1:] != source[:-1]))
    nodes = source[starts]
    while True:
        updated = parent.copy()
        updated[nodes] = np.minimum(parent[nodes], np.minimum.reduceat(parent[target], starts))
        while True:
            jumped = updated[updated]
            if np.array_equal(jumped, updated):
                break
            updated = jumped
        if np.array_equal(updated, parent):
            return parent
        parent = updated


def components(mask: np.ndarray) -> Components:
    """Connected components by union of overlapping runs in adjacent rows (8-connectivity): work per run,
    not per pixel."""
    found = runs(mask)
    n = len(found.row)
    if n == 0:
        empty = np.zeros(0, dtype=np.int32)
        return Components(found, empty, empty, empty, empty, empty, empty)
    width = mask.shape[1] + 2
    # Runs of row r + 1 touching run i of row r: start <= stop_i + 1 and stop >= start_i - 1.
    key_start = (found.row.astype(np.int64) * width) + found.start
    key_stop = (found.row.astype(np.int64) * width) + found.stop
    next_row = found.row.astype(np.int64) + 1
    first = np.searchsorted(key_stop, next_row * width + found.start - 1, side="left")
    last = np.searchsorted(key_start, next_row * width + found.stop + 1, side="right")
    parent = _union_find(n, first, last) if n <= PYTHON_UNION_FIND else _propagate_labels(n, first, last)
    numbers = np.cumsum(parent == np.arange(n))
    of_run = (numbers - 1)[parent]  # components numbered in order of their roots
    order = np.argsort(of_run, kind="stable")
    sizes = np.bincount(of_run, minlength=int(numbers[-1]))  # runs per component: where each starts in order
    starts = np.cumsum(sizes) - sizes
    top = np.minimum.reduceat(found.row[order], starts)
    bottom = np.maximum.reduceat(found.row[order], starts)
    left = np.minimum.reduceat(found.start[order], starts)
    right = np.maximum.reduceat(found.stop[order], starts)
    area = np.add.reduceat(found.length[order].astype(np.int64), starts)
    return Components(found, of_run, top, bottom, left, right, area)
