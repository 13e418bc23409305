"""Ink mask -> lines -> candidate characters. Pure image code: it never calls the model.

Connected components are grouped into lines (by vertical overlap) and, within a line, into blobs (parts of
one character that overlap horizontally: a dot, a broken stroke). A blob much wider than the line is tall
may hold touching characters: it is cut into atoms at the valleys of its ink profile. Every run of
consecutive atoms that could be one character becomes a :class:`Piece`; which pieces are the characters is
decided later from the classifier's probabilities (``handler.recognize``: segmentation by recognition).
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise

import numpy as np

from handler.imaging import ops
from handler.imaging.errors import ErrorCode, ImageError
from handler.imaging.page import Ink
from handler.readings import Box

MAX_COMPONENTS = 400  # a page of noise: only the largest components are considered
MAJOR = 0.35  # components at least this share of the tallest one's height can found a line
SAME_LINE = 0.4  # vertical overlap, as a share of the shorter component, that puts two in one line
STACK_GAP = 0.2  # paper between the stacked parts of one character, in its heights (lines are further apart)
FRAGMENT_INK = 0.12  # a blob with less ink than this share of a typical one on its line is a fragment
SAME_BLOB = 0.5  # horizontal overlap, as a share of the narrower, that makes two components one character
WIDE = 1.15  # a blob wider than this many line heights may hold several characters ...
WIDE_ALONE = 2.0  # ... or this many, when nothing else is on its line (a W, M, m or a short a is often 1.2-1.8)
MAX_PIECE = 1.7  # no candidate character is wider than this many line heights
MIN_ATOM = 0.22  # nor is a cut piece narrower than this
MAX_CUTS = 8  # per blob
MAX_ATOMS = 4  # a candidate character spans at most this many atoms
MAX_PIECES = 3000  # candidates on one page: beyond this it is not a page of handwriting (and would take seconds)
MARK = 0.3  # a blob lower than this share of the tallest on its line is punctuation, not a character
MERGE_GAP = 0.2  # blobs closer than this many line heights may still be one broken character
WIDE_PIECE = 1.45  # characters are rarely wider than this many line heights (a wide W or M) ...
WIDTH_SPREAD = 0.25  # ... and this fast the prior doubts wider ones (a Gaussian tail, in line heights)
MIN_NEIGHBOURS = 3  # blobs in a line before their median width says how wide a character is
TYPICAL_WIDTH = 0.75  # otherwise, this many line heights
WIDE_NEIGHBOURS = 1.5  # a piece wider than this many typical widths is doubted (and a blob is cut)
LOW_PIECE = 0.5  # nor lower than this share of their line: such a piece is a fragment (a broken stroke) ...
LOW_COST = 4.0  # ... doubted up to this much
CUT_COST = 0.5  # doubt per stroke cut through (half to each side of the cut) ...
ALONE_CUT = 3.0  # ... times this for a blob alone on its line
BRIDGE_COST = 0.3  # doubt for joining two blobs into one character ...
GAP_COST = 10.0  # ... plus this much per line height of paper between them
READ_WHOLE = 1.15  # a blob wider than this many line heights (or one that is cut) also goes to the line reader


@dataclass(frozen=True)
class Piece:
    """A candidate character: atoms ``first``..``last`` of its line, and how much the geometry doubts that it
    is one character (log-odds: wider than characters are, cut through ink, bridging a gap between blobs)."""

    first: int
    last: int
    box: Box
    doubt: float


@dataclass(frozen=True)
class Wide:
    """A blob that may hold touching characters, to be read whole (``handler.imaging.strip``): atoms
    ``first``..``last`` of its line, its box, and its ink's top and bottom row in each of its columns."""

    first: int
    last: int
    box: Box
    tops: np.ndarray
    bottoms: np.ndarray

    def column_box(self, left: int, right: int) -> Box:
        """The ink in columns ``left``..``right`` (relative to the blob) of this blob, tightly boxed."""
        inked = self.tops[left : right + 1] >= 0
        if not inked.any():
            return Box(self.box.left + left, self.box.top, right - left + 1, self.box.height)
        top = int(self.tops[left : right + 1][inked].min())
        bottom = int(self.bottoms[left : right + 1][inked].max())
        return Box(self.box.left + left, self.box.top + top, right - left + 1, bottom - top + 1)


@dataclass(frozen=True)
class Line:
    atoms: int
    height: float
    pieces: tuple[Piece, ...]  # glyphs for these are ``Segmentation.glyphs[offset : offset + len(pieces)]``
    offset: int
    wide: tuple[Wide, ...] = ()  # strips for these follow those of the lines above, in order


def _wide(first: int, last: int, box: Box, mask: np.ndarray) -> Wide:
    inked = mask.any(axis=0)
    tops = np.where(inked, mask.argmax(axis=0), -1)
    bottoms = np.where(inked, mask.shape[0] - 1 - mask[::-1].argmax(axis=0), -1)
    return Wide(first, last, box, tops.astype(np.int32), bottoms.astype(np.int32))


@dataclass(frozen=True)
class Segmentation:
    """Candidates of a page, in the ink's pixel coordinates, and the image size they map back to."""

    lines: tuple[Line, ...]
    masks: tuple[tuple[Box, np.ndarray], ...]  # per piece: its box and ink mask (dropped once glyphs are made)
    shape: tuple[int, int]
    wide_masks: tuple[tuple[Box, np.ndarray], ...] = ()  # per wide blob, likewise (dropped once strips are made)

    @property
    def single(self) -> bool:
        """One line holding one blob that is not wide: exactly one character, nothing to decide."""
        return len(self.lines) == 1 and self.lines[0].atoms == 1 and len(self.lines[0].pieces) == 1


@dataclass
class _Blob:
    members: list[int]
    left: int
    right: int
    top: int
    bottom: int


def _lines(found: ops.Components, order: np.ndarray) -> list[list[int]]:
    """Components (indices) grouped into lines by vertical overlap; small ones join the nearest line."""
    heights = found.bottom - found.top + 1
    tallest = heights[order].max()
    major = [i for i in order if heights[i] >= MAJOR * tallest]
    lines: list[list[int]] = []
    for i in sorted(major, key=lambda i: found.top[i] + found.bottom[i]):
        for line in lines:
            top = min(found.top[j] for j in line)
            bottom = max(found.bottom[j] for j in line)
            overlap = min(bottom, found.bottom[i]) - max(top, found.top[i]) + 1
            if overlap >= SAME_LINE * min(heights[i], bottom - top + 1) or any(_stacked(found, i, j) for j in line):
                line.append(i)
                break
        else:
            lines.append([i])
    bands = [(min(found.top[j] for j in line), max(found.bottom[j] for j in line)) for line in lines]
    for i in order:
        if heights[i] >= MAJOR * tallest:
            continue
        centre = (found.top[i] + found.bottom[i]) / 2
        distance = [
            0.0 if top <= centre <= bottom else min(abs(centre - top), abs(centre - bottom)) for top, bottom in bands
        ]
        lines[int(np.argmin(distance))].append(i)
    return sorted(lines, key=lambda line: min(found.top[j] for j in line))


def _stacked(found: ops.Components, i: int, j: int) -> bool:
    """Two parts of one broken character, one above the other: they overlap horizontally and the paper
    between them is thinner than a line gap."""
    overlap = min(found.right[i], found.right[j]) - max(found.left[i], found.left[j]) + 1
    narrower = min(found.right[i] - found.left[i], found.right[j] - found.left[j]) + 1
    gap = max(found.top[i], found.top[j]) - min(found.bottom[i], found.bottom[j]) - 1
    taller = max(found.bottom[i] - found.top[i], found.bottom[j] - found.top[j]) + 1
    return overlap >= SAME_BLOB * narrower and gap <= STACK_GAP * taller


def _blobs(found: ops.Components, line: list[int]) -> list[_Blob]:
    """A line's components merged into blobs where they overlap horizontally, left to right."""
    blobs: list[_Blob] = []
    by_area = sorted(line, key=lambda i: -found.area[i])
    for i in by_area:
        left, right = int(found.left[i]), int(found.right[i])
        for blob in blobs:
            overlap = min(right, blob.right) - max(left, blob.left) + 1
            if overlap >= SAME_BLOB * min(right - left + 1, blob.right - blob.left + 1):
                blob.members.append(i)
                blob.left, blob.right = min(blob.left, left), max(blob.right, right)
                blob.top, blob.bottom = min(blob.top, int(found.top[i])), max(blob.bottom, int(found.bottom[i]))
                break
        else:
            blobs.append(_Blob([i], left, right, int(found.top[i]), int(found.bottom[i])))
    blobs.sort(key=lambda blob: blob.left)
    return _absorb_fragments(found, _drop_marks(blobs))


def _drop_marks(blobs: list[_Blob]) -> list[_Blob]:
    """Blobs far shorter than the characters beside them (a full stop, a comma, a dash, an underline) are
    no character the model knows: leaving them in would add a character, or bend a neighbour's glyph."""
    if len(blobs) < 2:
        return blobs
    heights = [blob.bottom - blob.top + 1 for blob in blobs]
    tallest = max(heights)
    kept = [blob for blob, height in zip(blobs, heights, strict=True) if height >= MARK * tallest]
    return kept or blobs


def _absorb_fragments(found: ops.Components, blobs: list[_Blob]) -> list[_Blob]:
    """A blob with a small fraction of its neighbours' ink (a broken stroke's piece, a stray tail) is no
    character of its own: it joins the nearest blob beside it."""
    if len(blobs) < 2:
        return blobs
    areas = [int(found.area[blob.members].sum()) for blob in blobs]
    typical = float(np.median(areas)) if len(blobs) > 2 else max(areas)
    kept = [b for b, area in zip(blobs, areas, strict=True) if area >= FRAGMENT_INK * typical]
    if not kept or len(kept) == len(blobs):
        return blobs
    for blob, area in zip(blobs, areas, strict=True):
        if area >= FRAGMENT_INK * typical:
            continue
        nearest = min(kept, key=lambda k: max(k.left - blob.right, blob.left - k.right, 0))
        nearest.members += blob.members
        nearest.left, nearest.right = min(nearest.left, blob.left), max(nearest.right, blob.right)
        nearest.top, nearest.bottom = min(nearest.top, blob.top), max(nearest.bottom, blob.bottom)
    return kept


def _cuts(mask: np.ndarray, height: float, most: int) -> tuple[list[int], list[float]]:
    """Columns (relative to the blob) where touching characters are likely joined, the valleys of the ink
    profile, and each cut's doubt: how many strokes' worth of ink it goes through (a faint bridge: little)."""
    width = mask.shape[1]
    column = mask.sum(axis=0, dtype=np.float32)
    profile = np.convolve(column, np.ones(3, dtype=np.float32) / 3, mode="same")
    margin = max(1, int(MIN_ATOM * height))
    inner = np.arange(margin, width - margin)
    if inner.size == 0:
        return [], []
    stroke = max(1.0, ops.relative_stroke_width(mask) * max(mask.shape))
    valleys = [c for c in inner if profile[c] <= profile[c - 1] and profile[c] <= profile[c + 1]]
    chosen: list[int] = []
    for c in sorted(valleys, key=lambda c: profile[c]):
        if all(abs(c - other) >= margin for other in chosen):
            chosen.append(int(c))
        if len(chosen) == most:
            break
    chosen.sort()
    return chosen, [CUT_COST * float(np.clip(column[c] / stroke, 0.2, 3.0)) for c in chosen]


def segment(ink: Ink) -> Segmentation:
    """:class:`Ink` -> candidate characters in lines (see the module's docstring)."""
    found = ink.parts if ink.parts is not None else ops.components(ink.mask)
    if len(found) == 0:
        raise ImageError(ErrorCode.NO_INK, "no handwriting found: nothing left once lines and specks were removed")
    if len(found) == 1:  # one stroke: one character, unless it is as wide as a pair
        alone = _one_stroke(ink, found)
        if alone is not None:
            return alone
    order = np.argsort(-found.area, kind="stable")[:MAX_COMPONENTS]
    lines: list[Line] = []
    masks: list[tuple[Box, np.ndarray]] = []
    wide_masks: list[tuple[Box, np.ndarray]] = []
    for members in _lines(found, order):
        blobs = _blobs(found, members)
        height, typical, widest = _line_scale(blobs)
        atoms = _atoms(found, blobs, height, typical)
        wide_masks += atoms.wide_masks
        pieces = _pieces(blobs, atoms, height, widest)
        masks += [(piece.box, mask) for piece, mask in pieces]
        offset = len(masks) - len(pieces)
        lines.append(Line(len(atoms.spans), height, tuple(p for p, _ in pieces), offset, tuple(atoms.wide)))
        if len(masks) > MAX_PIECES:
            raise ImageError(
                ErrorCode.TOO_LARGE,
                f"more than {MAX_PIECES} candidate characters on one page: not a page of handwriting we can read",
            )
    return Segmentation(tuple(lines), tuple(masks), ink.mask.shape, tuple(wide_masks))


def _one_stroke(ink: Ink, found: ops.Components) -> Segmentation | None:
    """A page of one connected stroke no wider than a pair of characters: one character."""
    top, bottom, left, right = (int(v[0]) for v in (found.top, found.bottom, found.left, found.right))
    if right - left + 1 > WIDE_ALONE * (bottom - top + 1):
        return None
    box = Box(left, top, right - left + 1, bottom - top + 1)
    mask = ink.mask[top : bottom + 1, left : right + 1]
    wide = (_wide(0, 0, box, mask),) if box.width > READ_WHOLE * box.height else ()
    line = Line(1, float(box.height), (Piece(0, 0, box, 0.0),), 0, wide)
    return Segmentation((line,), ((box, mask),), ink.mask.shape, tuple((w.box, mask) for w in wide))


def _line_scale(blobs: list[_Blob]) -> tuple[float, float, float]:
    """A line's height, how wide one character is on it, and how wide a piece may be before it is doubted.

    How wide one character is: its neighbours say best (a touching pair is twice as wide as they are); a
    line of one or two blobs has only its height to go by."""
    heights = [blob.bottom - blob.top + 1 for blob in blobs]
    height = max(float(np.percentile(heights, 75)), 0.8 * max(heights))  # fragments do not lower it
    widths = [blob.right - blob.left + 1 for blob in blobs]
    typical = TYPICAL_WIDTH * height
    if len(blobs) >= MIN_NEIGHBOURS:  # narrower neighbours say more; wider ones may be touching pairs
        typical = min(typical, float(np.median(widths)))
    if len(blobs) == 1:
        widest = WIDE_ALONE * height
    elif len(blobs) >= MIN_NEIGHBOURS:
        widest = min(WIDE_PIECE * height, WIDE_NEIGHBOURS * typical)
    else:
        widest = WIDE_PIECE * height
    return height, typical, widest


@dataclass
class _Atoms:
    """A line cut into atoms: (left, right, blob) column spans, the doubt of the cut at each atom's left edge
    (and one more after the last), each blob's ink mask, and the blobs to be read whole."""

    spans: list[tuple[int, int, int]]
    cut_at: list[float]
    blob_masks: list[np.ndarray]
    wide: list[Wide]
    wide_masks: list[tuple[Box, np.ndarray]]


def _atoms(found: ops.Components, blobs: list[_Blob], height: float, typical: float) -> _Atoms:
    """Each blob cut at the valleys of its ink profile where it is wider than one character."""
    atoms = _Atoms([], [], [], [], [])
    for number, blob in enumerate(blobs):
        keep = np.zeros(len(found), dtype=bool)
        keep[blob.members] = True
        blob_mask = _crop_mask(found, keep, blob)
        atoms.blob_masks.append(blob_mask)
        edges, costs = [0], [0.0]
        wide = WIDE_ALONE * height if len(blobs) == 1 else min(WIDE * height, WIDE_NEIGHBOURS * typical)
        if (blob.right - blob.left + 1) > wide:
            expected = round((blob.right - blob.left + 1) / typical)  # characters it may hold
            cuts, cut_costs = _cuts(blob_mask, height, min(MAX_CUTS, max(1, 2 * expected - 1)))
            if len(blobs) == 1:  # nothing else on its line: far more often one wide character than a pair
                cut_costs = [cost * ALONE_CUT for cost in cut_costs]
            edges += cuts
            costs += cut_costs
        edges.append(blob.right - blob.left + 1)
        edges, costs = _inked_atoms(blob_mask, edges, costs)
        if len(edges) > 2 or (blob.right - blob.left + 1) > READ_WHOLE * height:
            box = Box(blob.left, blob.top, blob.right - blob.left + 1, blob.bottom - blob.top + 1)
            first = len(atoms.spans)
            atoms.wide.append(_wide(first, first + len(edges) - 2, box, blob_mask))
            atoms.wide_masks.append((box, blob_mask))
        atoms.spans += [(blob.left + a, blob.left + b - 1, number) for a, b in pairwise(edges)]
        atoms.cut_at += costs
    atoms.cut_at.append(0.0)
    return atoms


def _pieces(blobs: list[_Blob], atoms: _Atoms, height: float, widest: float) -> list[tuple[Piece, np.ndarray]]:
    """Every run of consecutive atoms that could be one character, with the geometry's doubt and its ink."""
    spans, cut_at = atoms.spans, atoms.cut_at
    pieces = []
    for first in range(len(spans)):
        bridges = 0.0
        for last in range(first, len(spans)):
            left, right = _span(spans, first, last)
            if last > first and ((right - left + 1) > MAX_PIECE * height or last - first >= MAX_ATOMS):
                break
            if last > first and spans[last][2] != spans[last - 1][2]:
                gap = max(0, blobs[spans[last][2]].left - blobs[spans[last - 1][2]].right - 1) / height
                if gap > MERGE_GAP:
                    break
                bridges += BRIDGE_COST + GAP_COST * gap
            doubt = max(0.0, (right - left + 1 - widest) / height) ** 2 / (2 * WIDTH_SPREAD**2)
            shaped = _piece_mask(blobs, atoms.blob_masks, spans, first, last)
            if shaped is None:  # columns of paper between the parts of a blob: no character there
                continue
            box, piece_mask = shaped
            doubt += LOW_COST * max(0.0, LOW_PIECE - box.height / height) / LOW_PIECE
            doubt += bridges + (cut_at[first] + cut_at[last + 1]) / 2
            pieces.append((Piece(first, last, box, doubt), piece_mask))
    return pieces


def _inked_atoms(mask: np.ndarray, edges: list[int], costs: list[float]) -> tuple[list[int], list[float]]:
    """Atoms with no ink (paper between a blob and a fragment it absorbed) join the atom before them (the
    first one, the atom after it)."""
    column_ink = mask.any(axis=0)
    kept_edges, kept_costs = [edges[0]], [costs[0]]
    for edge, cost, end in zip(edges[1:-1], costs[1:], edges[2:], strict=True):
        if column_ink[kept_edges[-1] : edge].any() and column_ink[edge:end].any():
            kept_edges.append(edge)
            kept_costs.append(cost)
    return [*kept_edges, edges[-1]], kept_costs


def _crop_mask(found: ops.Components, keep: np.ndarray, blob: _Blob) -> np.ndarray:
    """The blob's own pixels (not a neighbour's that reaches into its box), cropped to its box."""
    selected = keep[found.of_run]
    runs = found.runs
    inside = ops.Runs(runs.row[selected] - blob.top, runs.start[selected] - blob.left, runs.stop[selected] - blob.left)
    out = np.zeros((blob.bottom - blob.top + 1, blob.right - blob.left + 1), dtype=bool)
    ops.paint_runs(out, inside)
    return out


def _span(atoms: list[tuple[int, int, int]], first: int, last: int) -> tuple[int, int]:
    """Leftmost and rightmost column of atoms ``first``..``last`` (blobs may overlap: not simply the ends)."""
    return min(a[0] for a in atoms[first : last + 1]), max(a[1] for a in atoms[first : last + 1])


def _piece_mask(
    blobs: list[_Blob], blob_masks: list[np.ndarray], atoms: list[tuple[int, int, int]], first: int, last: int
) -> tuple[Box, np.ndarray] | None:
    """The ink of atoms ``first``..``last`` (parts of one or more blobs), tightly boxed."""
    left, right = _span(atoms, first, last)
    top = min(blobs[atoms[a][2]].top for a in range(first, last + 1))
    bottom = max(blobs[atoms[a][2]].bottom for a in range(first, last + 1))
    out = np.zeros((bottom - top + 1, right - left + 1), dtype=bool)
    for number in dict.fromkeys(atoms[a][2] for a in range(first, last + 1)):
        blob, blob_mask = blobs[number], blob_masks[number]
        lo, hi = max(left, blob.left), min(right, blob.right)
        part = blob_mask[:, lo - blob.left : hi - blob.left + 1]
        out[blob.top - top : blob.bottom - top + 1, lo - left : hi - left + 1] |= part
    rows = np.flatnonzero(out.any(axis=1))
    if rows.size == 0:
        return None
    out = out[rows[0] : rows[-1] + 1]
    return Box(left, top + int(rows[0]), right - left + 1, len(out)), out
