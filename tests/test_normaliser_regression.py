"""The normaliser's output on a fixed set of real-glyph uploads (photos, EMNIST PNGs, transparent,
16-bit, large shadowed photos) stays what it was: within 1e-4 per pixel, and the same top-1 label.
Rewrites for speed must pass this; changes in behaviour must regenerate the fixture on purpose (as when
28x28 images already in EMNIST's format began to pass through as their own pixels, and when large pages
began to be read at half resolution): ``python -m tests.test_normaliser_regression``, after the
recognition benchmarks show the change is no worse."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from handler import imaging

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "normaliser"
EXPECTED = dict(np.load(FIXTURES / "expected.npz"))


@pytest.fixture(scope="module")
def outputs() -> dict[str, np.ndarray]:
    return {name: imaging.prepare((FIXTURES / name).read_bytes(), 40_000_000) for name in sorted(EXPECTED)}


def test_every_fixture_normalises_to_the_recorded_glyph(outputs: dict[str, np.ndarray]) -> None:
    worst = {name: float(np.abs(outputs[name] - EXPECTED[name]).max()) for name in EXPECTED}
    assert max(worst.values()) <= 1e-4, sorted(worst.items(), key=lambda kv: -kv[1])[:5]


def test_the_model_reads_every_fixture_as_before(outputs: dict[str, np.ndarray], classifier) -> None:
    names = sorted(EXPECTED)
    before = classifier.predict(np.stack([EXPECTED[n] for n in names])).argmax(axis=1)
    after = classifier.predict(np.stack([outputs[n] for n in names])).argmax(axis=1)
    assert (before == after).all()


if __name__ == "__main__":  # regenerate the fixture, on purpose
    np.savez_compressed(
        FIXTURES / "expected.npz",
        **{name: imaging.prepare((FIXTURES / name).read_bytes(), 40_000_000) for name in sorted(EXPECTED)},
    )
