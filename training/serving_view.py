"""The training images as the service sees them: each glyph rendered as an upload (``training.render``) and
read back by the service's own code (``handler.imaging.prepare``), so training and serving share one
normaliser and the model learns what that normaliser leaves behind.

Rendering and normalising cost about 2.5 ms per image, so the copies are made once per run by a process
pool and cached in the run folder (a resumed run reuses them).
"""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from handler.imaging import ImageError, prepare
from training.render import upload_like

MAX_PIXELS = 50_000_000
CHUNK = 2048


def _render_chunk(args: tuple[np.ndarray, int]) -> tuple[np.ndarray, np.ndarray]:
    """Glyphs -> normalised uint8 copies and whether each was readable (NoInk on a faint render is skipped)."""
    glyphs, seed = args
    rng = np.random.default_rng(seed)
    out = np.zeros((len(glyphs), 28, 28), dtype=np.uint8)
    ok = np.ones(len(glyphs), dtype=bool)
    for i, glyph in enumerate(glyphs):
        try:
            out[i] = np.round(prepare(upload_like(glyph, rng), MAX_PIXELS) * 255).astype(np.uint8)
        except ImageError:
            ok[i] = False
    return out, ok


def render_copies(images: np.ndarray, seed: int, workers: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(n, 28, 28) uint8 glyphs -> (normalised copies, readable mask); deterministic for a seed."""
    chunks = [(images[start : start + CHUNK], seed * 100_003 + start) for start in range(0, len(images), CHUNK)]
    with ProcessPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
        results = list(pool.map(_render_chunk, chunks))
    return np.concatenate([r[0] for r in results]), np.concatenate([r[1] for r in results])


def cached_copies(run_dir: Path, name: str, images: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """:func:`render_copies`, cached as ``run_dir/<name>.npz`` so a resumed run does not render again."""
    path = run_dir / f"{name}.npz"
    if path.exists():
        cached = np.load(path)
        if cached["copies"].shape[0] == len(images):
            return cached["copies"], cached["ok"]
    copies, ok = render_copies(images, seed)
    run_dir.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, copies=copies, ok=ok)
    return copies, ok
