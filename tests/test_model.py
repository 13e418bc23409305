"""The artifact contract: manifests, checksums, caching and batched prediction."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from handler import model
from handler.model import Manifest, ModelError
from handler.storage import Storage


def test_bundled_manifest_describes_runtime_file(model_uri: str) -> None:
    manifest = Manifest.from_json((Path(model_uri) / "manifest.json").read_text())
    assert len(manifest.classes) == 47 and manifest.input["ink"] == "white-on-black"
    assert manifest.runtime_sha256 == model.sha256_file(Path(model_uri) / "model.tflite")


def test_predict_returns_one_distribution_per_image_at_any_batch_size(classifier: model.Classifier) -> None:
    rng = np.random.default_rng(0)
    for n in (1, 7, 64, 3):
        probabilities = classifier.predict(rng.random((n, 28, 28), dtype=np.float32))
        assert probabilities.shape == (n, 47)
        np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-4)
    assert classifier.predict(np.zeros((0, 28, 28), np.float32)).shape == (0, 47)


def test_batched_and_single_predictions_agree(classifier: model.Classifier) -> None:
    images = np.random.default_rng(1).random((5, 28, 28), dtype=np.float32)
    batched = classifier.predict(images)
    single = np.concatenate([classifier.predict(images[i : i + 1]) for i in range(5)])
    np.testing.assert_allclose(batched, single, atol=1e-5)


def test_tampered_runtime_file_is_rejected(model_uri: str, tmp_path: Path) -> None:
    copy = tmp_path / "version"
    shutil.copytree(model_uri, copy)
    with (copy / "model.tflite").open("ab") as f:
        f.write(b"\x00")
    with pytest.raises(ModelError, match="does not match the manifest"):
        model.load(str(copy), tmp_path / "cache")


@pytest.mark.parametrize(
    ("change", "message"),
    [({"format": 2}, "format"), ({"input": {"height": 32}}, "input spec"), ({"version": "../x"}, "version name")],
)
def test_incompatible_manifest_is_rejected(model_uri: str, change: dict, message: str) -> None:
    raw = json.loads((Path(model_uri) / "manifest.json").read_text())
    raw.update(change)
    with pytest.raises(ModelError, match=message):
        Manifest.from_json(json.dumps(raw))


def test_folder_without_manifest_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match=r"no manifest\.json"):
        model.load(str(tmp_path), tmp_path)


def test_s3_version_is_downloaded_verified_and_cached(s3, model_uri: str, tmp_path: Path) -> None:
    version = Path(model_uri).name
    for name in ("manifest.json", "model.tflite", "line_reader.tflite"):
        s3.upload_file(str(Path(model_uri) / name), "test-bucket", f"models/{version}/{name}")
    uri = f"s3://test-bucket/models/{version}/"
    loaded = model.load(uri, tmp_path, fetch=Storage().download)
    assert loaded.manifest.version == version and loaded.line_reader is not None
    s3.put_object(Bucket="test-bucket", Key=f"models/{version}/model.tflite", Body=b"tampered")
    again = model.load(uri, tmp_path, fetch=Storage().download)  # cached copy still matches: no re-download
    assert again.manifest.version == version
    shutil.rmtree(tmp_path)
    with pytest.raises(ModelError, match="does not match"):
        model.load(uri, tmp_path, fetch=Storage().download)


def test_temperature_scaling_keeps_the_ranking_and_softens_confidence() -> None:
    from handler.model import calibrate

    p = np.array([[0.90, 0.07, 0.03]], dtype=np.float32)
    soft = calibrate(p, 2.0)
    assert soft.argmax() == 0 and soft.max() < 0.9 and soft.sum() == pytest.approx(1.0)
    assert np.array_equal(calibrate(p, 1.0), p)


def test_a_calibrated_manifest_drives_the_review_flag(model_uri: str, tmp_path: Path) -> None:
    from tests.conftest import draw_seven, label_record, png_bytes

    folder = tmp_path / "calibrated"
    shutil.copytree(model_uri, folder)
    raw = json.loads((folder / "manifest.json").read_text())
    raw["calibration"] = {"temperature": 1.5, "review_below": 0.999999}
    (folder / "manifest.json").write_text(json.dumps(raw))
    classifier = model.load(str(folder), tmp_path / "cache")
    body = png_bytes(draw_seven())
    record = label_record(body, classifier, name="7.png")
    assert record["review"] is True  # nothing is that sure after softening
    raw["calibration"] = {"temperature": 99}
    with pytest.raises(ModelError, match="temperature"):
        Manifest.from_json(json.dumps(raw))


def test_each_row_takes_the_temperature_of_its_predicted_class(model_uri: str) -> None:
    from handler.model import calibrate

    p = np.array([[0.8, 0.15, 0.05], [0.1, 0.8, 0.1]], dtype=np.float32)
    scaled = calibrate(p, 1.0, np.array([0.5, 2.0, 1.0], dtype=np.float32))
    assert (scaled.argmax(axis=1) == [0, 1]).all()
    assert scaled[0, 0] > 0.8 > scaled[1, 1]  # class 0 sharpened, class 1 softened
    raw = json.loads((Path(model_uri) / "manifest.json").read_text())
    raw["calibration"] = {"temperature": 1.0, "class_temperatures": [1.0, 99.0]}
    with pytest.raises(ModelError, match="class_temperatures"):
        Manifest.from_json(json.dumps(raw))


def test_class_temperatures_must_cover_every_output(model_uri: str, tmp_path: Path) -> None:
    folder = tmp_path / "version"
    shutil.copytree(model_uri, folder)
    raw = json.loads((folder / "manifest.json").read_text())
    raw["calibration"] = {"temperature": 1.0, "class_temperatures": [1.0] * 46}
    (folder / "manifest.json").write_text(json.dumps(raw))
    with pytest.raises(ModelError, match="46 class temperatures for 47 classes"):
        model.load(str(folder), tmp_path / "cache")
