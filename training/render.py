"""Render EMNIST glyphs the way uploads arrive: photos of ink on paper (also redrawn with a pen's width),
clean scans, transparent PNGs, tiny digit-field scans and letters written in the boxes of a printed form.

The training job renders its augmented copies with these and then runs the service's own normaliser
(``handler.imaging``) on the bytes; the benchmarks and tests render their held-out uploads with them.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from itertools import pairwise

import numpy as np
from PIL import Image, ImageDraw, ImageFilter


def _encode(image: Image.Image, rng: np.random.Generator, *, lossy: bool) -> bytes:
    buffer = io.BytesIO()
    if lossy:
        image.save(buffer, format="JPEG", quality=int(rng.integers(60, 95)))
    else:
        image.save(buffer, format="PNG")
    return buffer.getvalue()


def _ink_strength(glyph: np.ndarray, size: int, rng: np.random.Generator, max_tilt: float = 8.0) -> np.ndarray:
    """The glyph (white on black) enlarged to ``size`` px, tilted, as ink coverage 0-1."""
    return _tilted(Image.fromarray(glyph).resize((size, size), Image.Resampling.BICUBIC), rng, max_tilt)


def _tilted(ink: Image.Image, rng: np.random.Generator, max_tilt: float) -> np.ndarray:
    """White-on-black ink turned by up to ``max_tilt`` degrees either way, as coverage 0-1."""
    turned = ink.rotate(float(rng.uniform(-max_tilt, max_tilt)), resample=Image.Resampling.BICUBIC, fillcolor=0)
    return np.asarray(turned, dtype=np.float32) / 255.0


def _paper(height: int, width: int, rng: np.random.Generator, low: float = 0.72) -> np.ndarray:
    """Paper of random brightness with a lighting gradient."""
    paper = float(rng.uniform(low, 0.95))
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    gradient = rng.uniform(-0.08, 0.08) * (xx / width - 0.5) + rng.uniform(-0.08, 0.08) * (yy / height - 0.5)
    return np.full((height, width), paper, dtype=np.float32) + gradient


def _lay_ink(page: np.ndarray, ink: np.ndarray, top: int, left: int, ink_level: float) -> None:
    size_h, size_w = ink.shape
    region = page[top : top + size_h, left : left + size_w]
    page[top : top + size_h, left : left + size_w] = region - ink * (region - ink_level)


def _photographed(ink: np.ndarray, height: int, width: int, rng: np.random.Generator, noise: float) -> np.ndarray:
    """Square ink coverage laid somewhere on a ``height`` x ``width`` page of lit paper, dark ink of a random
    level, and sensor noise of up to ``noise``: a photo's grey page, 0-1."""
    size = ink.shape[0]
    page = _paper(height, width, rng)
    top = int(rng.integers(0, height - size + 1))
    left = int(rng.integers(0, width - size + 1))
    _lay_ink(page, ink, top, left, float(rng.uniform(0.05, 0.3)))
    page += rng.normal(0, rng.uniform(0.01, noise), page.shape).astype(np.float32)
    return page


def photo_like(glyph: np.ndarray, rng: np.random.Generator) -> bytes:
    """(28, 28) uint8 white-on-black glyph -> JPEG bytes of a photographed character on paper."""
    size = int(rng.integers(90, 260))
    ink = _ink_strength(glyph, size, rng)
    canvas_w = int(size * rng.uniform(1.4, 2.4))
    canvas_h = int(size * rng.uniform(1.4, 2.4))
    page = _photographed(ink, canvas_h, canvas_w, rng, noise=0.04)
    tint = np.array([1.0, rng.uniform(0.95, 1.0), rng.uniform(0.85, 1.0)], dtype=np.float32)
    rgb = np.clip(page[..., None] * tint * 255, 0, 255).astype(np.uint8)
    return _encode(Image.fromarray(rgb), rng, lossy=True)


def skeleton(mask: np.ndarray) -> np.ndarray:
    """Zhang-Suen thinning: a boolean mask's centre lines, one pixel wide."""
    thin = mask.astype(np.uint8)
    changed = True
    while changed:
        changed = False
        for step in (0, 1):
            p = np.pad(thin, 1)
            ring = [
                p[:-2, 1:-1],
                p[:-2, 2:],
                p[1:-1, 2:],
                p[2:, 2:],
                p[2:, 1:-1],
                p[2:, :-2],
                p[1:-1, :-2],
                p[:-2, :-2],
            ]
            n2, _, n4, _, n6, _, n8, _ = ring
            neighbours = sum(r.astype(np.int32) for r in ring)
            following = ring[1:] + ring[:1]
            crossings = sum(((a == 0) & (b == 1)).astype(np.int32) for a, b in zip(ring, following, strict=True))
            one, other = (n2 * n4 * n6, n4 * n6 * n8) if step == 0 else (n2 * n4 * n8, n2 * n6 * n8)
            side = (one == 0) & (other == 0)
            remove = (thin == 1) & (neighbours >= 2) & (neighbours <= 6) & (crossings == 1) & side
            if remove.any():
                thin[remove] = 0
                changed = True
    return thin.astype(bool)


def pen_strokes(glyph: np.ndarray, size: int, pen: int) -> np.ndarray:
    """The glyph's centre lines redrawn with a round nib of ``pen`` px on a ``size`` px square, as ink
    coverage 0-1: strokes of one even width, as a ballpoint or a marker writes."""
    return np.asarray(_pen_canvas(glyph, size, pen), dtype=np.float32) / 255.0


def _pen_canvas(glyph: np.ndarray, size: int, pen: int) -> Image.Image:
    scale = size / glyph.shape[0]
    centres = skeleton(glyph > 100)
    points = set(zip(*(axis.tolist() for axis in np.nonzero(centres)), strict=True))
    canvas = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(canvas)
    for y, x in points:
        here = ((x + 0.5) * scale, (y + 0.5) * scale)
        for dy, dx in ((0, 1), (1, 0), (1, 1), (1, -1)):
            if (y + dy, x + dx) in points:
                draw.line([here, ((x + dx + 0.5) * scale, (y + dy + 0.5) * scale)], fill=255, width=pen)
        draw.ellipse([here[0] - pen / 2, here[1] - pen / 2, here[0] + pen / 2, here[1] + pen / 2], fill=255)
    return canvas


def pen_photo(glyph: np.ndarray, rng: np.random.Generator, pen: int | None = None) -> bytes:
    """A photo of the glyph written with a pen (:func:`pen_strokes`, a 3-12 px nib on a 160-300 px glyph),
    tilted, on paper, as a JPEG."""
    pen = pen or int(rng.integers(3, 13))
    size = int(rng.integers(160, 300))
    ink = _tilted(_pen_canvas(glyph, size, pen), rng, max_tilt=8.0)
    canvas_h, canvas_w = int(size * rng.uniform(1.4, 2.2)), int(size * rng.uniform(1.4, 2.2))
    page = _photographed(ink, canvas_h, canvas_w, rng, noise=0.03)
    return _encode(Image.fromarray(np.clip(page * 255, 0, 255).astype(np.uint8)), rng, lossy=True)


def scan_like(glyph: np.ndarray, rng: np.random.Generator) -> bytes:
    """A clean greyscale scan: dark ink on white, sometimes slightly blurred, saved as PNG."""
    size = int(rng.integers(40, 160))
    ink = _ink_strength(glyph, size, rng, max_tilt=4.0)
    margin = int(size * rng.uniform(0.1, 0.6))
    page = np.full((size + 2 * margin, size + 2 * margin), float(rng.uniform(0.9, 1.0)), dtype=np.float32)
    _lay_ink(page, ink, margin, margin, float(rng.uniform(0.0, 0.2)))
    image = Image.fromarray(np.clip(page * 255, 0, 255).astype(np.uint8))
    if rng.random() < 0.5:
        image = image.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.5, 1.5))))
    return _encode(image, rng, lossy=False)


def transparent_like(glyph: np.ndarray, rng: np.random.Generator) -> bytes:
    """A drawing app's export: coloured ink on a transparent background (RGBA PNG)."""
    size = int(rng.integers(64, 200))
    ink = _ink_strength(glyph, size, rng, max_tilt=4.0)
    margin = int(size * rng.uniform(0.05, 0.4))
    alpha = np.zeros((size + 2 * margin, size + 2 * margin), dtype=np.float32)
    alpha[margin : margin + size, margin : margin + size] = ink
    colour = rng.integers(0, 90, 3)
    rgba = np.zeros((*alpha.shape, 4), dtype=np.uint8)
    rgba[..., :3] = colour
    rgba[..., 3] = np.clip(alpha * 255, 0, 255).astype(np.uint8)
    return _encode(Image.fromarray(rgba, "RGBA"), rng, lossy=False)


def tiny_like(glyph: np.ndarray, rng: np.random.Generator, side: int | None = None) -> bytes:
    """A digit-field scan of 8-20 px that the character fills: dark ink on light paper, PNG."""
    side = side or int(rng.integers(8, 21))
    ink = np.asarray(Image.fromarray(glyph).resize((side, side), Image.Resampling.BOX), dtype=np.float32) / 255.0
    page = np.full((side, side), float(rng.uniform(0.8, 1.0)), dtype=np.float32)
    _lay_ink(page, ink, 0, 0, float(rng.uniform(0.0, 0.25)))
    page += rng.normal(0, rng.uniform(0.0, 0.03), page.shape).astype(np.float32)
    return _encode(Image.fromarray(np.clip(page * 255, 0, 255).astype(np.uint8)), rng, lossy=False)


def form_cell(glyph: np.ndarray, rng: np.random.Generator) -> bytes:
    """A letter written in one box of a printed form, photographed or scanned: dark box lines around it
    (sometimes with the neighbouring boxes' lines), a dark scan border at one edge, grey uneven paper."""
    cell = int(rng.integers(60, 180))
    line = max(1, int(cell * rng.uniform(0.015, 0.05)))
    pad = int(cell * rng.uniform(0.0, 0.25))  # how much of the neighbouring cells the crop shows
    height = width = cell + 2 * pad
    page = _paper(height, width, rng, low=0.6)
    line_level = float(rng.uniform(0.0, 0.35))
    for offset in (pad, pad + cell - line):
        page[offset : offset + line, :] = line_level
        page[:, offset : offset + line] = line_level
    size = int(cell * rng.uniform(0.55, 0.85))
    ink = _ink_strength(glyph, size, rng, max_tilt=6.0)
    slack = cell - 2 * line - size
    top = pad + line + int(rng.integers(0, max(1, slack)))
    left = pad + line + int(rng.integers(0, max(1, slack)))
    _lay_ink(page, ink, top, left, float(rng.uniform(0.0, 0.25)))
    if rng.random() < 0.5:  # a dark scan border along one edge
        edge = max(1, int(width * rng.uniform(0.02, 0.08)))
        side = int(rng.integers(0, 4))
        view = np.rot90(page, side)
        view[:, :edge] = float(rng.uniform(0.0, 0.2))
    page += rng.normal(0, rng.uniform(0.005, 0.03), page.shape).astype(np.float32)
    image = Image.fromarray(np.clip(page * 255, 0, 255).astype(np.uint8))
    return _encode(image, rng, lossy=bool(rng.random() < 0.6))


def form_field(glyphs: list[np.ndarray], rng: np.random.Generator) -> bytes:
    """A word written one letter per box in a printed form field (a name in capitals), photographed or
    scanned: a row of boxes sharing their dark lines, grey uneven paper, sometimes a scan border."""
    cell = int(rng.integers(40, 120))
    line = max(1, int(cell * rng.uniform(0.015, 0.05)))
    pad = int(cell * rng.uniform(0.05, 0.3))
    height, width = cell + 2 * pad, cell * len(glyphs) + 2 * pad
    page = _paper(height, width, rng, low=0.6)
    line_level = float(rng.uniform(0.0, 0.35))
    for offset in (pad, pad + cell - line):
        page[offset : offset + line, pad : pad + cell * len(glyphs)] = line_level
    for number in range(len(glyphs) + 1):
        left = min(pad + number * cell, width - line)
        page[pad : pad + cell, left : left + line] = line_level
    for number, glyph in enumerate(glyphs):
        size = int(cell * rng.uniform(0.55, 0.85))
        ink = _ink_strength(glyph, size, rng, max_tilt=6.0)
        slack = cell - 2 * line - size
        top = pad + line + int(rng.integers(0, max(1, slack)))
        left = pad + number * cell + line + int(rng.integers(0, max(1, slack)))
        _lay_ink(page, ink, top, left, float(rng.uniform(0.0, 0.25)))
    if rng.random() < 0.3:
        edge = max(1, int(height * rng.uniform(0.02, 0.08)))
        page[:, :edge] = float(rng.uniform(0.0, 0.2))
    page += rng.normal(0, rng.uniform(0.005, 0.03), page.shape).astype(np.float32)
    image = Image.fromarray(np.clip(page * 255, 0, 255).astype(np.uint8))
    return _encode(image, rng, lossy=bool(rng.random() < 0.6))


RENDERERS = {
    "photo": photo_like,
    "pen": pen_photo,
    "scan": scan_like,
    "transparent": transparent_like,
    "tiny": tiny_like,
    "form": form_cell,
}
# Pen photos: strokes of one even width (a ballpoint, a marker), which EMNIST's own glyphs never have.
TRAINING_MIX = {"photo": 0.3, "pen": 0.2, "scan": 0.15, "transparent": 0.1, "tiny": 0.15, "form": 0.1}


def upload_like(glyph: np.ndarray, rng: np.random.Generator) -> bytes:
    """One upload of a random kind, in the proportions the training job uses."""
    kinds = list(TRAINING_MIX)
    kind = kinds[int(rng.choice(len(kinds), p=list(TRAINING_MIX.values())))]
    return RENDERERS[kind](glyph, rng)


@dataclass(frozen=True)
class StringPage:
    """A rendered page of hand-printed strings: the image, its text (lines joined by ``\\n``), and whether any
    two neighbouring characters touch or overlap."""

    data: bytes
    text: str
    touching: bool


def punctuation(kind: str, rng: np.random.Generator) -> np.ndarray:
    """A 28x28 glyph (white ink on black, like EMNIST's) of a hand-made full stop (``.``), comma (``,``) or
    dash (``-``), in a character's frame: the separators written between the digits of an amount."""
    image = Image.new("L", (112, 112), 0)
    draw = ImageDraw.Draw(image)
    width = int(rng.integers(9, 15))
    x, y = int(rng.integers(44, 64)), int(rng.integers(84, 96))
    if kind in ".,":
        draw.ellipse([x - width // 2, y - width // 2, x + width // 2, y + width // 2], fill=255)
    if kind == ",":
        draw.line([x + width // 3, y, x - 6, y + 16], fill=255, width=width // 2 + 2)
    if kind == "-":
        draw.line([30, int(rng.integers(50, 62)), 82, int(rng.integers(50, 62))], fill=255, width=width)
    return np.asarray(image.resize((28, 28), Image.Resampling.BOX))


def amount_page(digit_glyphs: dict[int, np.ndarray], rng: np.random.Generator) -> tuple[StringPage, str]:
    """An amount as written on a cheque (``12,345.67``, ``980-``): held-out digit glyphs with hand-made
    separators, photographed. Returns the page and the digits it holds (what ``--allow 0123456789`` reads)."""
    value = int(rng.integers(1, 1_000_000))
    text = f"{value:,}.{int(rng.integers(0, 100)):02d}" if rng.random() < 0.7 else f"{value:,}-"
    glyphs = [
        digit_glyphs[int(ch)][rng.integers(len(digit_glyphs[int(ch)]))] if ch.isdigit() else punctuation(ch, rng)
        for ch in text
    ]
    page = string_page(glyphs, text, rng)
    return page, "".join(ch for ch in text if ch.isdigit())


def _ink_columns(glyph: np.ndarray) -> np.ndarray:
    cols = np.flatnonzero(glyph.max(axis=0) > 0.1)
    return glyph[:, cols[0] : cols[-1] + 1] if cols.size else glyph


def string_page(
    glyphs: list[np.ndarray], labels: str, rng: np.random.Generator, *, lines: int = 1, touch: float = 0.0
) -> StringPage:
    """Glyphs written left to right in ``lines`` lines with random gaps (a pair touches or slightly overlaps
    with probability ``touch``), baseline jitter and size variation, photographed on paper as a JPEG."""
    height = int(rng.integers(40, 90))
    bounds = np.linspace(0, len(glyphs), lines + 1).round().astype(int)
    rows: list[list[tuple[np.ndarray, int, int]]] = []  # per line: (ink, x, y offset)
    touching = False
    width = 0
    for start, stop in pairwise(bounds):
        x, row = 0, []
        for position in range(start, stop):
            size = int(height * rng.uniform(0.85, 1.1))
            big = np.asarray(Image.fromarray(glyphs[position]).resize((size, size), Image.Resampling.BICUBIC))
            ink = _ink_columns(big.astype(np.float32) / 255.0)
            if row:
                if rng.random() < touch:
                    gap = round(height * rng.uniform(-0.08, 0.0))
                    touching = True
                else:
                    gap = round(height * rng.uniform(0.12, 0.45))
                x += gap
            row.append((ink, x, round(height * rng.uniform(-0.06, 0.06)) + (height - size) // 2))
            x += ink.shape[1]
        rows.append(row)
        width = max(width, x)
    margin = int(height * rng.uniform(0.4, 1.0))
    spacing = int(height * rng.uniform(1.3, 1.6))
    page_h = 2 * margin + spacing * (lines - 1) + height + height // 4
    page_w = 2 * margin + width
    coverage = np.zeros((page_h, page_w), dtype=np.float32)
    for number, row in enumerate(rows):
        for ink, x, y in row:
            top, left = margin + number * spacing + y + height // 8, margin + x
            region = coverage[top : top + ink.shape[0], left : left + ink.shape[1]]
            np.maximum(region, ink[: region.shape[0], : region.shape[1]], out=region)
    page = _paper(page_h, page_w, rng)
    _lay_ink(page, coverage, 0, 0, float(rng.uniform(0.05, 0.3)))
    page += rng.normal(0, rng.uniform(0.01, 0.03), page.shape).astype(np.float32)
    image = Image.fromarray(np.clip(page * 255, 0, 255).astype(np.uint8))
    text = "\n".join(labels[start:stop] for start, stop in pairwise(bounds))
    return StringPage(_encode(image, rng, lossy=True), text, touching)
