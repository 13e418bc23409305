"""The training job end to end on a few hundred images: train, evaluate, export (parity), publish."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from handler import model
from handler.model import ModelError
from handler.storage import Storage, WriteConflict
from training import architectures
from training.data import EMNIST_BALANCED_CLASSES, Emnist

pytestmark = pytest.mark.slow
FIXTURE_GLYPHS = sorted((Path(__file__).resolve().parent / "fixtures" / "normaliser").glob("emnist-0[0-5].png"))


def test_seed_architecture_is_exactly_the_reference() -> None:
    seed = architectures.build("seed", 47)
    assert seed.count_params() == 1_747_951
    assert [type(layer).__name__ for layer in seed.layers] == [
        "Conv2D",
        "MaxPooling2D",
        "Dropout",
        "Conv2D",
        "MaxPooling2D",
        "Dropout",
        "Flatten",
        "Dense",
        "Dropout",
        "Dense",
        "Dense",
    ]


def test_default_architecture_stays_under_two_million_parameters() -> None:
    assert architectures.build(architectures.DEFAULT_ARCHITECTURE, 47).count_params() <= 2_000_000


def test_unknown_architecture_lists_the_choices() -> None:
    with pytest.raises(ValueError, match="choose from seed"):
        architectures.build("resnet", 47)


@pytest.fixture(scope="module")
def tiny_data() -> Emnist:
    """470 synthetic images, 10 per class: class k is a bar at row k-dependent height, learnable in one epoch."""
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(47), 10)
    images = np.zeros((len(labels), 28, 28), dtype=np.uint8)
    for i, label in enumerate(labels):
        row, col = 2 + (label % 24), 2 + (label // 24) * 12
        images[i, row : row + 3, col : col + 12] = 255
        images[i] = np.clip(images[i] + rng.integers(0, 30, (28, 28)), 0, 255)
    return Emnist(images, labels, EMNIST_BALANCED_CLASSES, ("synthetic",))


@pytest.fixture(scope="module")
def trained_run(tiny_data: Emnist, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from training.evaluate import evaluate_run
    from training.export import export_run
    from training.train import train

    run = tmp_path_factory.mktemp("run")
    train(tiny_data, run, architecture="seed", epochs=1, val_fraction=0.2, data_label="synthetic", verbose=0)
    evaluate_run(run, tiny_data)
    export_run(run, tiny_data)
    return run


def test_one_epoch_smoke_run_writes_checkpoint_history_and_card(trained_run: Path) -> None:
    assert (trained_run / "best.keras").exists()
    history = (trained_run / "history.csv").read_text().splitlines()
    assert history[0].startswith("epoch") and len(history) == 2
    card = (trained_run / "card.md").read_text()
    for section in ("class-balanced accuracy", "Most confused pairs", "Per-class recall", "confusion.png", "Export"):
        assert section in card
    assert (trained_run / "confusion.png").stat().st_size > 1000 and (trained_run / "curves.png").exists()


def test_export_parity_litert_matches_keras(trained_run: Path) -> None:
    report = json.loads((trained_run / "export.json").read_text())
    assert report["candidates"]["float32"]["agreement"] >= 0.999
    assert report["agreement"] == report["candidates"][report["variant"]]["agreement"] >= report["min_agreement"]
    assert set(report["candidates"]) == {"float32", "float16", "dynamic_range"}
    assert (trained_run / "export" / "model.tflite").exists() and (trained_run / "export" / "model.keras").exists()


def test_exported_keras_model_has_no_optimizer_state(trained_run: Path) -> None:
    import zipfile

    with zipfile.ZipFile(trained_run / "export" / "model.keras") as archive:
        weights = archive.read("model.weights.h5")
    assert b"optimizer" not in weights


def test_publish_to_a_folder_is_write_once_and_loads(trained_run: Path, tmp_path: Path) -> None:
    from training.publish import publish_run

    uri = publish_run(trained_run, str(tmp_path), version="v1")
    assert (tmp_path / "DEFAULT").read_text().strip() == "v1"
    loaded = model.load(uri, tmp_path / "cache")
    assert loaded.manifest.training["architecture"] == "seed" and loaded.classes == EMNIST_BALANCED_CLASSES
    assert set(loaded.manifest.files) == {"model.tflite", "model.keras", "card.md", "curves.png", "confusion.png"}
    with pytest.raises(WriteConflict):
        publish_run(trained_run, str(tmp_path), version="v1")


def test_publish_to_s3_round_trip_write_once_and_tamper_check(s3, trained_run: Path, tmp_path: Path) -> None:
    from training.publish import publish_run

    uri = publish_run(trained_run, "s3://test-bucket/models", version="v2")
    assert uri == "s3://test-bucket/models/v2/"
    loaded = model.load(uri, tmp_path / "cache", fetch=Storage().download)
    assert loaded.manifest.version == "v2"
    with pytest.raises(WriteConflict, match="already exists"):
        publish_run(trained_run, "s3://test-bucket/models", version="v2")
    with pytest.raises(WriteConflict):
        Storage().upload_once(trained_run / "card.md", "test-bucket", "models/v2/card.md")
    s3.put_object(Bucket="test-bucket", Key="models/v2/model.tflite", Body=b"tampered")
    shutil.rmtree(tmp_path / "cache")
    with pytest.raises(ModelError, match="does not match"):
        model.load(uri, tmp_path / "cache", fetch=Storage().download)


def test_training_cli_help_explains_the_steps() -> None:
    from training.__main__ import build_parser

    text = build_parser().format_help()
    for word in ("train", "evaluate", "export", "publish", "run", "examples"):
        assert word in text


def test_training_copies_are_uploads_read_back_by_the_service_code(tmp_path: Path) -> None:
    """One normaliser: a training copy is exactly what handler.imaging makes of the rendered upload."""
    from PIL import Image

    from handler.imaging import prepare
    from training.render import upload_like
    from training.serving_view import MAX_PIXELS, cached_copies

    glyphs = np.stack([np.asarray(Image.open(p).convert("L")) for p in sorted(FIXTURE_GLYPHS)])
    copies, ok = cached_copies(tmp_path, "rendered-0", glyphs, seed=5)
    rng = np.random.default_rng(5 * 100_003)  # the first chunk's seed
    for glyph, copy, readable in zip(glyphs, copies, ok, strict=True):
        expected = prepare(upload_like(glyph, rng), MAX_PIXELS)
        assert readable and np.abs(copy.astype(np.float32) / 255 - expected).max() <= 1 / 255
    again, _ = cached_copies(tmp_path, "rendered-0", glyphs, seed=5)  # cached: not rendered twice
    assert np.array_equal(again, copies) and (tmp_path / "rendered-0.npz").exists()


def test_an_ensemble_of_runs_is_one_model_that_exports(trained_run: Path, tiny_data: Emnist, tmp_path: Path) -> None:
    from training.ensemble import build_ensemble
    from training.evaluate import evaluate_run
    from training.export import export_run

    second = tmp_path / "second"
    shutil.copytree(trained_run, second)
    config = build_ensemble([trained_run, second], tmp_path / "ensemble")
    assert config.architecture == "ensemble(seed+seed)"
    evaluate_run(tmp_path / "ensemble", tiny_data)
    result = export_run(tmp_path / "ensemble", tiny_data)
    assert result.agreement >= 0.999


def test_the_line_reader_trains_on_the_strips_serving_makes_and_converts_to_litert_builtins(tmp_path: Path) -> None:
    from PIL import Image

    from handler.imaging.strip import HEIGHT, WIDTH
    from handler.model import LineReader
    from training import line_reader
    from training.render import string_page

    glyphs = [np.asarray(Image.open(p).convert("L")) for p in sorted(FIXTURE_GLYPHS)]
    page = string_page(glyphs[:3], "xyz", np.random.default_rng(1), touch=1.0)
    strip = line_reader.page_strip(page.data)
    assert strip is not None and strip.shape == (HEIGHT, WIDTH) and strip.max() == 1.0
    model = line_reader.build()
    assert model.output_shape == (None, WIDTH // 4, 48)
    (tmp_path / "run").mkdir()
    model.save(tmp_path / "run" / "model.keras")
    exported = line_reader.export(tmp_path / "run")  # an unrolled GRU: no TensorList (Select TF) ops
    frames = LineReader(exported, temperature=1.0).predict(strip[np.newaxis])
    assert frames.shape == (1, WIDTH // 4, 48)
    np.testing.assert_allclose(frames.sum(axis=-1), 1.0, atol=1e-3)


def test_a_line_reader_for_other_classes_is_refused_at_load(model_uri: str, tmp_path: Path) -> None:
    from training import line_reader

    run = tmp_path / "run"
    run.mkdir()
    line_reader.build(n_classes=10).save(run / "model.keras")  # a digits-only reader beside 47 classes
    exported = line_reader.export(run)
    folder = tmp_path / "version"
    shutil.copytree(model_uri, folder)
    shutil.copy2(exported, folder / model.LINE_READER_FILE)
    body = json.loads((folder / model.MANIFEST_NAME).read_text())
    body["files"][model.LINE_READER_FILE]["sha256"] = model.sha256_file(exported)
    (folder / model.MANIFEST_NAME).write_text(json.dumps(body))
    with pytest.raises(ModelError, match="not the 47 classes and a blank"):
        model.load(str(folder), tmp_path / "cache")


def candidate(agreement: float, accuracy: float, balanced: float, ms: float, size: int) -> dict[str, float]:
    return {
        "agreement": agreement,
        "accuracy": accuracy,
        "balanced_accuracy": balanced,
        "ms_per_image_batch64": ms,
        "bytes": size,
    }


def test_export_ships_a_quantised_variant_that_users_would_not_tell_apart() -> None:
    from training.export import choose_variant

    variant, why = choose_variant(
        {
            "float32": candidate(1.0, 0.894, 0.898, 0.47, 2_300_000),
            "float16": candidate(1.0, 0.894, 0.898, 0.49, 1_200_000),
            "dynamic_range": candidate(0.998, 0.894, 0.899, 0.08, 600_000),  # a few close calls moved
        }
    )
    assert variant == "dynamic_range" and "99.5%" in why


@pytest.mark.parametrize(
    "quantised",
    [
        candidate(0.99, 0.894, 0.898, 0.08, 600_000),  # too many labels moved
        candidate(0.998, 0.892, 0.898, 0.08, 600_000),  # 0.2 points of accuracy lost
        candidate(0.998, 0.894, 0.896, 0.08, 600_000),  # 0.2 points of class-balanced accuracy lost
    ],
)
def test_export_keeps_float32_when_quantising_costs_accuracy(quantised: dict[str, float]) -> None:
    from training.export import choose_variant

    reference = candidate(1.0, 0.894, 0.898, 0.47, 2_300_000)
    assert choose_variant({"float32": reference, "dynamic_range": quantised})[0] == "float32"


def test_export_refuses_a_float32_conversion_that_disagrees_with_keras() -> None:
    from training.export import ExportError, choose_variant

    with pytest.raises(ExportError, match="float32"):
        choose_variant({"float32": candidate(0.99, 0.894, 0.898, 0.47, 2_300_000)})


def test_timing_an_export_counts_cpu_per_item_after_a_warm_up_call() -> None:
    from training.timing import ms_per_item

    calls: list[int] = []
    assert ms_per_item(lambda batch: calls.append(len(batch)), np.zeros((100, 2)), batch=8, repeats=3) >= 0
    assert calls == [8, 8, 8, 8]
