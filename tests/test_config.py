"""Settings: read once from the environment, refused early when unsafe."""

from __future__ import annotations

from pathlib import Path

import pytest

from handler.config import ConfigError, Settings, bundled_model_uri


def test_defaults_use_disjoint_prefixes_and_the_bundled_model() -> None:
    settings = Settings.from_env({})
    assert (settings.input_prefix, settings.output_prefix, settings.error_prefix) == ("input/", "output/", "errors/")
    assert settings.resolved_model_uri == bundled_model_uri()
    assert (Path(settings.resolved_model_uri) / "manifest.json").exists()


def test_environment_overrides_are_typed() -> None:
    settings = Settings.from_env({"BUCKET": "b", "MAX_OBJECT_BYTES": "1000", "TOP_K": "3", "INPUT_PREFIX": "in/"})
    assert (settings.bucket, settings.max_object_bytes, settings.top_k, settings.input_prefix) == ("b", 1000, 3, "in/")


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"OUTPUT_PREFIX": "input/"}, "must be disjoint"),
        ({"OUTPUT_PREFIX": "input/results/"}, "lies inside INPUT_PREFIX"),
        ({"INPUT_PREFIX": "input"}, "a prefix is a folder"),
        ({"ERROR_PREFIX": "/errors/"}, "a prefix is a folder"),
        ({"MAX_PIXELS": "lots"}, "expected an integer"),
        ({"TOP_K": "0"}, "positive"),
        ({"MODEL_URI": "no/such/folder"}, "MODEL_URI"),
    ],
)
def test_unsafe_settings_are_refused_with_a_clear_message(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Settings.from_env(env)


def test_missing_bundled_model_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no bundled model"):
        bundled_model_uri(tmp_path)


def test_limits_and_memory_size_must_agree() -> None:
    from handler.config import ConfigError, Settings

    assert Settings(memory_mb=1024).memory_needed_mb <= 1024  # the template's smallest MemorySize takes the defaults
    with pytest.raises(ConfigError, match="MemorySize 512 MB is below"):
        Settings.from_env({"AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "512"})
    with pytest.raises(ConfigError, match="MAX_PIXELS=100,000,000"):
        Settings.from_env({"AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "1024", "MAX_PIXELS": "100000000"})


def test_prefixes_with_iam_wildcards_are_refused() -> None:
    from handler.config import ConfigError, Settings

    with pytest.raises(ConfigError, match="wildcards"):
        Settings.from_env({"INPUT_PREFIX": "in*/"})
