"""Calibration maths on data whose answer is known."""

from __future__ import annotations

import numpy as np
import pytest

from handler.model import calibrate
from training.calibrate import expected_calibration_error, fit_temperature, review_threshold


def overconfident(n: int = 4000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A 3-class model whose logits are twice what they should be: temperature 2 undoes it."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 1.5, (n, 3))
    true_p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    truth = np.array([rng.choice(3, p=p) for p in true_p])
    sharp = np.exp(2 * logits) / np.exp(2 * logits).sum(axis=1, keepdims=True)
    return sharp, truth


@pytest.mark.parametrize("objective", ["nll", "ece"])
def test_the_fitted_temperature_undoes_overconfidence(objective: str) -> None:
    probabilities, truth = overconfident()
    temperature = fit_temperature(probabilities, truth, objective)
    assert temperature == pytest.approx(2.0, abs=0.3)
    before = expected_calibration_error(probabilities.max(axis=1), probabilities.argmax(axis=1) == truth)
    after_p = calibrate(probabilities, temperature)
    after = expected_calibration_error(after_p.max(axis=1), after_p.argmax(axis=1) == truth)
    assert after < before / 2


def test_the_review_threshold_keeps_accepted_labels_at_the_asked_precision() -> None:
    probabilities, truth = overconfident(seed=1)
    confidence, correct = probabilities.max(axis=1), probabilities.argmax(axis=1) == truth
    threshold = review_threshold(confidence, correct, precision=0.95)
    accepted = confidence >= threshold
    assert correct[accepted].mean() >= 0.95 and 0 < accepted.mean() < 1
    assert review_threshold(confidence, np.zeros_like(correct), precision=0.95) == 1.0  # nothing can be trusted


def test_calibration_reads_uploads_as_the_service_does(classifier) -> None:
    """The probabilities fitted on are the model's on the service's own reading of each upload."""
    from pathlib import Path

    from handler.imaging import prepare
    from training.calibrate import _probabilities

    fixtures = Path(__file__).resolve().parent / "fixtures" / "normaliser"
    blobs = [p.read_bytes() for p in sorted(fixtures.glob("photo-0*.jpg"))]
    measured = _probabilities(classifier, blobs)
    expected = classifier.predict(np.stack([prepare(b, 40_000_000) for b in blobs]))
    np.testing.assert_allclose(measured, expected, atol=1e-6)
