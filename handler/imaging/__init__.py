"""Image bytes -> the model's 28x28 inputs, by stage: ``decode`` (bytes -> pixels, budgets first),
``page`` (find the ink), ``segment`` (lines and candidate characters), ``glyph`` (EMNIST geometry), with
``ops`` as the primitives. Pure image code: no model, no I/O."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from handler.imaging.decode import MAX_WORK_SIDE, decode, decode_sized
from handler.imaging.errors import ImageError
from handler.imaging.glyph import as_emnist, glyph_of, normalise, to_glyph
from handler.imaging.page import find_ink
from handler.imaging.segment import Line, Piece, Segmentation, Wide, segment
from handler.imaging.strip import HEIGHT as STRIP_HEIGHT
from handler.imaging.strip import WIDTH as STRIP_WIDTH
from handler.imaging.strip import to_strip
from handler.readings import Box

__all__ = [
    "MAX_WORK_SIDE",
    "Box",
    "Candidates",
    "ImageError",
    "Wide",
    "candidates",
    "decode",
    "decode_sized",
    "normalise",
    "page_candidates",
    "prepare",
]


def prepare(data: bytes, max_pixels: int) -> np.ndarray:
    """Bytes -> one character's model input, or :class:`ImageError` naming why the image cannot be read."""
    return normalise(decode(data, max_pixels))


@dataclass(frozen=True)
class Candidates:
    """A page's candidate characters: one model input per piece, one line-reader strip per wide blob
    (touching characters, read whole), and where each is. ``scale`` maps the segmentation's pixels to the
    input's (upright) pixels."""

    glyphs: np.ndarray
    segmentation: Segmentation
    scale: tuple[float, float]
    strips: np.ndarray = field(default_factory=lambda: np.zeros((0, STRIP_HEIGHT, STRIP_WIDTH), np.float32))

    def box(self, piece: Piece | Box) -> Box:
        """Where a piece (or a box in the segmentation's pixels) is, in the input's upright pixels."""
        return (piece.box if isinstance(piece, Piece) else piece).scaled(*self.scale)


def _whole(shape: tuple[int, int]) -> Segmentation:
    """An EMNIST-format input: one character filling the frame."""
    piece = Piece(0, 0, Box(0, 0, shape[1], shape[0]), 0.0)
    return Segmentation((Line(1, float(shape[0]), (piece,), 0),), (), shape)


def candidates(data: bytes, max_pixels: int) -> Candidates:
    """Bytes -> :class:`Candidates`. A page holding one character gives exactly the glyph :func:`prepare` gives."""
    return page_candidates(*decode_sized(data, max_pixels))


def page_candidates(gray: np.ndarray, size: tuple[int, int]) -> Candidates:
    """Decoded grey pixels (and the input's upright size, which boxes are given in) -> :class:`Candidates`:
    find the ink, segment it, one model input per candidate piece."""
    width, height = size
    passed = as_emnist(gray)
    if passed is not None:
        scale = (width / gray.shape[1], height / gray.shape[0])
        return Candidates(passed[np.newaxis], _whole(gray.shape), scale)
    ink = find_ink(gray)
    found = segment(ink)
    scale = (width / ink.mask.shape[1], height / ink.mask.shape[0])
    if found.single:
        glyphs = to_glyph(ink)[np.newaxis]
    else:
        glyphs = np.stack([glyph_of(ink, box, mask) for box, mask in found.masks])
    strips = np.zeros((len(found.wide_masks), STRIP_HEIGHT, STRIP_WIDTH), np.float32)
    for number, (box, mask) in enumerate(found.wide_masks):
        strips[number] = to_strip(ink, box, mask)
    spent = replace(found, masks=(), wide_masks=())  # lighter to send home
    return Candidates(glyphs, spent, scale, strips)
