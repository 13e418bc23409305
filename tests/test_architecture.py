"""The shape the code keeps: S3 only through boto3's public API, image code free of records, the upload
path free of bulk code, functions short enough to read."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
HANDLER = ROOT / "handler"
MODULES = sorted(HANDLER.rglob("*.py"))
NETWORK_MODULES = {"socket", "ssl", "http", "urllib3", "requests", "httpx", "pycurl", "select", "selectors"}
BOTO_PUBLIC = {"boto3", "botocore.config", "botocore.exceptions"}
MAX_FUNCTION_LINES = 50


def imported(path: Path) -> list[str]:
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.append(node.module)
    return names


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_module_speaks_http_tls_or_sockets_itself(path: Path) -> None:
    roots = {name.split(".")[0] for name in imported(path)}
    assert not roots & NETWORK_MODULES, f"{path.name} imports {roots & NETWORK_MODULES}: S3 goes through boto3"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(ROOT)))
def test_boto3_and_botocore_are_used_through_their_public_api_only(path: Path) -> None:
    boto = [name for name in imported(path) if name.split(".")[0] in ("boto3", "botocore")]
    assert set(boto) <= BOTO_PUBLIC, f"{path.name} imports {set(boto) - BOTO_PUBLIC}"
    private = [
        ast.unparse(node)
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Attribute)
        and node.attr.startswith("_")
        and not node.attr.startswith("__")
        and any(word in ast.unparse(node.value).lower() for word in ("boto", "client", "s3", "session", "meta"))
    ]
    assert not private, f"{path.name} reads private names of boto3 objects: {private}"


def test_image_code_knows_nothing_of_records() -> None:
    for path in sorted((HANDLER / "imaging").glob("*.py")):
        outside = [
            name
            for name in imported(path)
            if name.startswith("handler.") and not name.startswith(("handler.imaging", "handler.readings"))
        ]
        assert not outside, f"{path.name} imports {outside}"


def test_readings_import_nothing_from_the_service() -> None:
    assert not [name for name in imported(HANDLER / "readings.py") if name.startswith("handler")]


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_function_is_longer_than_a_screen(path: Path) -> None:
    long = [
        f"{node.name} ({node.end_lineno - node.lineno + 1} lines)"  # type: ignore[operator]
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
        and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES  # type: ignore[operator]
    ]
    assert not long, f"{path.name}: {long}"


def test_the_upload_path_does_not_load_the_bulk_module() -> None:
    probe = "import sys, handler.app; print('handler.bulk' in sys.modules, 'handler.sinks' in sys.modules)"
    env = {**os.environ, "AWS_DEFAULT_REGION": "us-east-1", "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["False", "True"]  # bulk stays out; the sinks (which it uses) are in
