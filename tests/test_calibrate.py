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


def test_a_temperature_per_predicted_class_fixes_opposite_miscalibrations_and_keeps_every_label() -> None:
    """Class A underconfident, class B overconfident: one temperature cannot fix both, one per class can."""
    from training.calibrate import fit_class_temperatures

    rng = np.random.default_rng(0)
    n = 4000
    predicted = rng.integers(0, 2, n)
    confidence = rng.uniform(0.55, 0.95, n)
    correct = rng.random(n) < np.where(predicted == 0, np.minimum(confidence + 0.08, 1), confidence - 0.12)
    truth = np.where(correct, predicted, 1 - predicted)
    probabilities = np.zeros((n, 2))
    probabilities[np.arange(n), predicted] = confidence
    probabilities[np.arange(n), 1 - predicted] = 1 - confidence
    one = calibrate(probabilities, fit_temperature(probabilities, truth, objective="ece"))
    per_class = np.asarray(fit_class_temperatures(probabilities, truth, 1.0), dtype=np.float32)
    both = calibrate(probabilities, 1.0, per_class)
    assert (both.argmax(axis=1) == predicted).all()
    assert per_class[0] < 1 < per_class[1]  # sharpen the underconfident class, soften the overconfident one

    def per_class_error(p: np.ndarray) -> float:  # each class's own calibration error, averaged
        return float(
            np.mean(
                [expected_calibration_error(p[predicted == c].max(axis=1), correct[predicted == c]) for c in (0, 1)]
            )
        )

    assert per_class_error(both) < 0.5 * per_class_error(one)


def test_every_kind_of_upload_is_fitted_and_reported_and_older_reports_still_render() -> None:
    from training.calibrate import KINDS, calibration_table, summarise

    def half(seed: int) -> dict[str, np.ndarray]:
        probabilities, truth = overconfident(n=600, seed=seed)
        return {"truth": truth, **{kind: probabilities for kind in KINDS}}

    report = summarise({"fit": half(2), "report": half(3)})
    assert set(KINDS) <= set(report) and report["temperature"] > 1
    assert len(calibration_table(report)) == 2 + len(KINDS)
    older = {key: value for key, value in report.items() if key != "pen"}
    assert len(calibration_table(older)) == 2 + len(KINDS) - 1
