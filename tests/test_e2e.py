"""End to end over real HTTP: a moto S3 server on 127.0.0.1, the shipped events, the CLI, a crashed bulk run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from infra.cfn import entry_points, load_template
from infra.local_s3 import LocalContext, embedded_s3, s3_notification, sqs_wrap
from tests.conftest import draw_seven, png_bytes

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parent.parent
EVENTS = ROOT / "infra" / "events"
EXAMPLE_BUCKET = "handwriting-ocr-example"


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    with embedded_s3() as url:
        yield url


@pytest.fixture
def bucket(endpoint: str, request: pytest.FixtureRequest) -> str:
    name = request.node.name.lower().replace("_", "-")[:50]
    boto3.client("s3").create_bucket(Bucket=name)
    return name


@pytest.fixture
def app(endpoint: str) -> Iterator[Any]:
    from handler import app as lambda_app

    lambda_app.service.cache_clear()
    yield lambda_app
    lambda_app.service.cache_clear()


def keys(bucket: str, prefix: str) -> list[str]:
    pages = boto3.client("s3").get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return sorted(item["Key"] for page in pages for item in page.get("Contents", []))


def get_json(bucket: str, key: str) -> dict[str, Any]:
    return json.loads(boto3.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read())


def test_upload_notification_records_over_http_with_a_bad_object(app: Any, bucket: str, endpoint: str) -> None:
    s3 = boto3.client("s3")
    assert s3.meta.endpoint_url == endpoint
    uploads = {"input/good 1.png": png_bytes(draw_seven()), "input/sub/bad.jpg": b"\xff\xd8\xff\xe0 broken"}
    notifications = []
    for key, body in uploads.items():
        etag = s3.put_object(Bucket=bucket, Key=key, Body=body)["ETag"].strip('"')
        notifications.append(s3_notification(bucket, [(key, etag, len(body))]))
    response = app.on_upload(sqs_wrap(notifications), LocalContext())
    assert response == {"batchItemFailures": []}
    result = get_json(bucket, "output/good 1.png.json")
    assert result["source"]["etag"] == notifications[0]["Records"][0]["s3"]["object"]["eTag"]
    assert result["label"] == result["top"][0]["label"]
    assert get_json(bucket, "output/sub/bad.jpg.json")["error"]["code"] == "Corrupt"
    assert keys(bucket, "output/") == ["output/good 1.png.json", "output/sub/bad.jpg.json"]
    assert keys(bucket, "errors/") == ["errors/sub/bad.jpg.json"]  # errors are mirrored there to be listed


def test_shipped_events_work_as_sam_local_invoke_sends_them(app: Any, endpoint: str) -> None:
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=EXAMPLE_BUCKET)
    seven = png_bytes(draw_seven())
    for key in ("input/examples/hello world/seven (1).png", "input/examples/ünïcode+plus.png"):
        s3.put_object(Bucket=EXAMPLE_BUCKET, Key=key, Body=seven)
    s3.put_object(Bucket=EXAMPLE_BUCKET, Key="input/examples/broken.png", Body=b"\x89PNG\r\n\x1a\nbroken")
    handlers = entry_points(load_template(ROOT / "template.yaml"))

    def invoke(function: str, event_file: str) -> Any:
        module, _, name = handlers[function].rpartition(".")
        assert module == "handler.app"
        return getattr(app, name)(json.loads((EVENTS / event_file).read_text()), LocalContext())

    assert invoke("OcrFunction", "s3-put.json")["counts"]["result"] == 1
    assert get_json(EXAMPLE_BUCKET, "output/examples/hello world/seven (1).png.json")["label"]
    assert invoke("OcrFunction", "sqs-s3-put.json") == {"batchItemFailures": []}
    assert get_json(EXAMPLE_BUCKET, "output/examples/ünïcode+plus.png.json")["source"]["key"].endswith(
        "ünïcode+plus.png"
    )
    assert get_json(EXAMPLE_BUCKET, "output/examples/broken.png.json")["error"]["code"] == "Corrupt"
    assert get_json(EXAMPLE_BUCKET, "errors/examples/broken.png.json")["error"]["code"] == "Corrupt"
    batch = invoke("BulkFunction", "bulk-batch.json")
    assert sum(batch["counts"].values()) == 3 and batch["counts"]["failed"] == 0

    summarize_event = json.loads((EVENTS / "summarize.json").read_text())
    results_key = summarize_event["ResultWriterDetails"]["Key"].replace("manifest.json", "SUCCEEDED_0.json")
    s3.put_object(
        Bucket=EXAMPLE_BUCKET, Key=results_key, Body=json.dumps([{"Status": "SUCCEEDED", "Output": json.dumps(batch)}])
    )
    manifest = {"DestinationBucket": EXAMPLE_BUCKET, "ResultFiles": {"SUCCEEDED": [{"Key": results_key}]}}
    s3.put_object(Bucket=EXAMPLE_BUCKET, Key=summarize_event["ResultWriterDetails"]["Key"], Body=json.dumps(manifest))
    assert invoke("SummarizeFunction", "summarize.json")["total"] == 3
    assert get_json(EXAMPLE_BUCKET, "runs/example-run/summary.json")["counts"] == batch["counts"]


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: int = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "handler", *args],
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_label_cli_prints_one_record_per_file_and_exits_zero_with_bad_files(tmp_path: Path) -> None:
    (tmp_path / "nested").mkdir()
    (tmp_path / "seven.png").write_bytes(png_bytes(draw_seven()))
    (tmp_path / "nested" / "seven.jpg").write_bytes(png_bytes(draw_seven().convert("RGB"), format="JPEG"))
    (tmp_path / "nested" / "notes.txt").write_text("not an image")
    done = run_cli("label", str(tmp_path), env={"AWS_ENDPOINT_URL": ""})
    assert done.returncode == 0, done.stderr
    records = [json.loads(line) for line in done.stdout.splitlines()]
    by_key = {Path(r["source"]["key"]).relative_to(tmp_path).as_posix(): r for r in records}
    assert set(by_key) == {"seven.png", "nested/seven.jpg", "nested/notes.txt"}
    assert by_key["nested/notes.txt"]["error"]["code"] == "Unsupported"
    assert by_key["seven.png"]["label"] == by_key["nested/seven.jpg"]["label"]


def test_label_cli_takes_files_and_folders_and_refuses_a_missing_path(tmp_path: Path) -> None:
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder" / "seven.png").write_bytes(png_bytes(draw_seven()))
    (tmp_path / "alone.png").write_bytes(png_bytes(draw_seven()))
    done = run_cli(
        "label", "--text", str(tmp_path / "alone.png"), str(tmp_path / "folder"), env={"AWS_ENDPOINT_URL": ""}
    )
    assert done.returncode == 0, done.stderr
    assert [line.split("\t")[0] for line in done.stdout.splitlines()] == [
        str(tmp_path / "alone.png"),
        str(tmp_path / "folder" / "seven.png"),
    ]
    missing = run_cli("label", str(tmp_path / "nope"), env={"AWS_ENDPOINT_URL": ""})
    assert missing.returncode == 2 and "no such file or folder" in missing.stderr


def test_label_cli_prints_the_text_of_string_samples(tmp_path: Path) -> None:
    (tmp_path / "bad.png").write_bytes(b"not an image")
    for sample in (ROOT / "samples" / "strings").glob("*.jpg"):
        (tmp_path / sample.name).write_bytes(sample.read_bytes())
    done = run_cli("label", "--text", str(tmp_path), env={"AWS_ENDPOINT_URL": ""})
    assert done.returncode == 0, done.stderr
    shown = dict(line.split("\t")[:2] for line in done.stdout.splitlines())
    assert shown[str(tmp_path / "bad.png")].startswith("!Unsupported")
    assert shown[str(tmp_path / "A7.jpg")] == "A7"
    assert len(shown[str(tmp_path / "AB12_CD34.jpg")].split(" / ")) == 2  # two lines


def test_demo_runs_with_no_aws_account() -> None:
    env = {
        "AWS_ACCESS_KEY_ID": "",
        "AWS_SECRET_ACCESS_KEY": "",
        "AWS_ENDPOINT_URL": "",
        "AWS_PROFILE": "no-such-profile",
        "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
        "AWS_CONFIG_FILE": "/nonexistent",
    }
    done = subprocess.run(
        [sys.executable, "-m", "infra.demo"],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "broken upload.png" in done.stdout and "Corrupt" in done.stdout
    labelled = [line for line in done.stdout.splitlines() if line.startswith("demo/") and "Corrupt" not in line]
    assert len(labelled) == len([p for p in (ROOT / "samples").rglob("*") if p.suffix in (".png", ".jpg")])


def test_bulk_run_killed_part_way_resumes_with_exactly_one_record_per_input(bucket: str, endpoint: str) -> None:
    s3 = boto3.client("s3")
    total = 2000
    bodies = [png_bytes(draw_seven(60 + i % 50)) for i in range(50)]
    for i in range(total):
        s3.put_object(Bucket=bucket, Key=f"input/many/{i:04d}.png", Body=bodies[i % 50] if i % 100 else b"broken")
    env = {"BUCKET": bucket, "AWS_ENDPOINT_URL": endpoint}
    kill_at = [sys.executable, "-m", "tests.kill_at", "PutObject", "300"]  # SIGKILL at the 300th record write
    first = subprocess.run(
        [*kill_at, "bulk", "--run-id", "first", "--batch-size", "32"],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        timeout=600,
        check=False,
    )
    assert first.returncode == -signal.SIGKILL, first.stderr[-2000:]
    mirrored = {k.split("/", 1)[1] for k in keys(bucket, "errors/")}
    unmirrored = [
        k for k in keys(bucket, "output/") if k.split("/", 1)[1] not in mirrored and "error" in get_json(bucket, k)
    ]
    done_before = len(keys(bucket, "output/")) - len(unmirrored)  # an error killed before its mirror is redone
    assert 0 < done_before < total

    second = run_cli("bulk", "--run-id", "second", env=env, timeout=600)
    assert second.returncode == 0, second.stderr
    outputs, errors = keys(bucket, "output/"), keys(bucket, "errors/")
    assert len(outputs) == total  # exactly one record per input
    assert len(errors) == total // 100 and {k.split("/", 1)[1] for k in errors} <= {k.split("/", 1)[1] for k in outputs}
    summary = get_json(bucket, "runs/second/summary.json")
    assert summary["total"] == total
    assert summary["counts"]["skipped"] == done_before  # every record written before the kill is complete and kept
    assert summary["counts"]["skipped"] + summary["counts"]["result"] + summary["counts"]["error"] == total
    assert summary["counts"]["failed"] == 0
    third = json.loads(run_cli("bulk", "--run-id", "third", env=env).stdout)
    assert third["counts"]["skipped"] == total
