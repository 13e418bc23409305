"""Regenerate the demo images from real EMNIST handwriting (run from the repo root).

Each sample is a real NIST writer's character, saved the ways people upload: a photo of
paper (JPEG), a clean scan (PNG, dark ink), a transparent PNG, and EMNIST's own white-on-black.
"""

from __future__ import annotations

import io
import sys
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from training.data import load_folder
from training.render import photo_like, string_page

WORD = [("hello world", "HELLO"), ("numbers", "42"), ("ünïcode + more", "dEt")]
STRINGS = [("A7", 1), ("2024", 1), ("HELLO", 1), ("AB12\nCD34", 2)]  # written on one page each


def main(data: str = "../shared/emnist", out: Path = Path("samples")) -> None:
    emnist = load_folder(Path(data))
    rng = np.random.default_rng(7)
    count = 0
    for folder, text in WORD:
        for position, char in enumerate(text):
            candidates = np.flatnonzero(emnist.labels == emnist.classes.index(char))
            glyph = emnist.images[rng.choice(candidates)]
            style = count % 4
            target = out / folder / f"{position + 1}-{char}"
            target.parent.mkdir(parents=True, exist_ok=True)
            if style == 0:
                target.with_suffix(".jpg").write_bytes(photo_like(glyph, rng))
            elif style == 1:
                Image.fromarray(255 - glyph).resize((96, 96), Image.Resampling.BICUBIC).save(target.with_suffix(".png"))
            elif style == 2:
                alpha = Image.fromarray(glyph).resize((128, 128), Image.Resampling.BICUBIC)
                rgba = Image.new("RGBA", alpha.size, (20, 30, 120, 0))
                rgba.putalpha(alpha)
                rgba.save(target.with_suffix(".png"))
            else:
                buffer = io.BytesIO()
                Image.fromarray(glyph).save(buffer, format="PNG")
                target.with_suffix(".png").write_bytes(buffer.getvalue())
            count += 1
    make_strings(emnist, out)


def make_strings(emnist: object, out: Path) -> None:
    """Pages of several characters, each a real NIST writer's glyph, photographed on paper."""
    rng = np.random.default_rng(10)
    for text, lines in STRINGS:
        chars = text.replace("\n", "")
        glyphs = [emnist.images[rng.choice(np.flatnonzero(emnist.labels == emnist.classes.index(c)))] for c in chars]
        page = string_page(glyphs, chars, rng, lines=lines)
        target = out / "strings" / f"{text.replace(chr(10), '_')}.jpg"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(page.data)


if __name__ == "__main__":
    main()
