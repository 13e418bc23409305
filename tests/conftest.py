"""Shared fixtures. AWS is always mocked (moto) or a moto server on loopback: never a real account."""

from __future__ import annotations

import io
import os

os.environ.update(
    {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "POWERTOOLS_SERVICE_NAME": "handwriting-ocr-test",
        "POWERTOOLS_METRICS_NAMESPACE": "HandwritingOCRTest",
        "POWERTOOLS_TRACE_DISABLED": "true",
        "POWERTOOLS_LOG_LEVEL": "WARNING",
        "TF_CPP_MIN_LOG_LEVEL": "3",
    }
)
os.environ.pop("AWS_ENDPOINT_URL", None)
os.environ.pop("MODEL_URI", None)

from collections.abc import Iterator
from pathlib import Path

import boto3
import numpy as np
import pytest
from moto import mock_aws
from PIL import Image, ImageDraw

from handler import model
from handler.config import bundled_model_uri

BUCKET = "test-bucket"


def draw_seven(size: int = 200, stroke: int = 14, ink: int = 20, paper: int = 235) -> Image.Image:
    """A hand-drawn-looking '7' on paper: asymmetric, so flips and transposes are visible."""
    image = Image.new("L", (size, size), paper)
    draw = ImageDraw.Draw(image)
    s = size
    draw.line([(0.25 * s, 0.2 * s), (0.75 * s, 0.2 * s), (0.42 * s, 0.82 * s)], fill=ink, width=stroke, joint="curve")
    return image


def png_bytes(image: Image.Image, **save: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=str(save.pop("format", "PNG")), **save)
    return buffer.getvalue()


@pytest.fixture
def seven() -> Image.Image:
    return draw_seven()


@pytest.fixture(scope="session")
def model_uri() -> str:
    return bundled_model_uri()


@pytest.fixture(scope="session")
def classifier(model_uri: str) -> model.Classifier:
    return model.load(model_uri, Path("/nonexistent-cache"))


@pytest.fixture
def aws() -> Iterator[None]:
    with mock_aws():
        yield


@pytest.fixture
def s3(aws: None):
    client = boto3.client("s3")
    client.create_bucket(Bucket=BUCKET)
    return client


@pytest.fixture
def app(s3):
    """handler.app with its per-container service rebuilt inside this test's mock."""
    from handler import app as lambda_app

    lambda_app.service.cache_clear()
    yield lambda_app
    lambda_app.service.cache_clear()


def glyph_array() -> np.ndarray:
    """The '7' as an EMNIST-style array: white ink on black, 28x28 uint8."""
    return 255 - np.asarray(draw_seven(28, stroke=3, ink=0, paper=255))


def label_record(data: bytes, classifier, max_pixels: int = 40_000_000, name: str = "page.png") -> dict:
    """The record ``python -m handler label`` would print for one image's bytes."""
    from handler.recognition import label, model_info
    from handler.records import local_source, record_of

    source = local_source(name, data)
    (read,) = label([(source, data)], classifier, max_pixels)
    return record_of(source, read, model_info(classifier))
