"""Turn EMNIST glyphs into photo-like uploads: dark ink on lit paper, larger, off-centre, tilted, noisy.

Used by the accuracy benchmark and the tests to check that the service's normaliser reads
photos about as well as the 28x28 originals.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image


def photo_like(glyph: np.ndarray, rng: np.random.Generator) -> bytes:
    """(28, 28) uint8 white-on-black glyph -> JPEG bytes of a photographed character on paper."""
    size = int(rng.integers(90, 260))
    big = Image.fromarray(glyph).resize((size, size), Image.Resampling.BICUBIC)
    big = big.rotate(float(rng.uniform(-8, 8)), resample=Image.Resampling.BICUBIC, fillcolor=0)
    ink_strength = np.asarray(big, dtype=np.float32) / 255.0

    canvas_w = int(size * rng.uniform(1.4, 2.4))
    canvas_h = int(size * rng.uniform(1.4, 2.4))
    paper = float(rng.uniform(0.72, 0.95))
    ink_level = float(rng.uniform(0.05, 0.3))
    yy, xx = np.mgrid[0:canvas_h, 0:canvas_w].astype(np.float32)
    gradient = rng.uniform(-0.08, 0.08) * (xx / canvas_w - 0.5) + rng.uniform(-0.08, 0.08) * (yy / canvas_h - 0.5)
    page = np.full((canvas_h, canvas_w), paper, dtype=np.float32) + gradient
    top = int(rng.integers(0, canvas_h - size + 1))
    left = int(rng.integers(0, canvas_w - size + 1))
    region = page[top : top + size, left : left + size]
    page[top : top + size, left : left + size] = region - ink_strength * (region - ink_level)
    page += rng.normal(0, rng.uniform(0.01, 0.04), page.shape).astype(np.float32)
    tint = np.array([1.0, rng.uniform(0.95, 1.0), rng.uniform(0.85, 1.0)], dtype=np.float32)
    rgb = np.clip(page[..., None] * tint * 255, 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="JPEG", quality=int(rng.integers(70, 92)))
    return buffer.getvalue()
