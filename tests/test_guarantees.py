"""The service's promises where AWS differs from moto, and where inputs, crashes and clocks misbehave:
exactly one record per input, describing the object as it is now."""

from __future__ import annotations

import json
import os
import shutil
import string
import subprocess
import sys
import time
import tracemalloc
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from handler.bulk import RunTotals, iter_json_values, run_prefix
from handler.model import ModelError
from handler.pipeline import Deadline, Service, process
from handler.records import LONG_KEYS, Source
from infra.local_s3 import LocalContext, s3_notification, sqs_wrap
from tests.conftest import BUCKET, draw_seven, png_bytes
from tests.record_layout import assert_record_in_step
from tests.s3_semantics import behave_like_aws

ROOT = Path(__file__).resolve().parent.parent
CONTEXT = LocalContext()
SEVEN = png_bytes(draw_seven())


def upload(s3: Any, key: str, body: bytes = SEVEN) -> tuple[str, str, int]:
    return key, s3.put_object(Bucket=BUCKET, Key=key, Body=body)["ETag"].strip('"'), len(body)


def keys(s3: Any, prefix: str) -> list[str]:
    return sorted(o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("Contents", []))


def read(s3: Any, key: str) -> dict[str, Any]:
    return json.loads(s3.get_object(Bucket=BUCKET, Key=key)["Body"].read())


@pytest.fixture
def aws_app(app: Any) -> Any:
    """handler.app whose S3 client sees what AWS shows a role without s3:ListBucket."""
    behave_like_aws(app.service().storage.s3)
    return app


class Clock(LocalContext):
    """A Lambda context whose remaining time drops by ``step`` ms each time it is asked."""

    def __init__(self, remaining_ms: int, step: int) -> None:
        self.remaining, self.step = remaining_ms, step

    def get_remaining_time_in_millis(self) -> int:
        self.remaining -= self.step
        return self.remaining


# --- deleted inputs, as AWS answers them (403, not 404) ---


def test_an_input_deleted_before_it_was_read_gets_not_found_even_when_s3_answers_403(aws_app: Any, s3: Any) -> None:
    key, etag, size = upload(s3, "input/gone.png")
    s3.delete_object(Bucket=BUCKET, Key=key)
    event = sqs_wrap([s3_notification(BUCKET, [(key, etag, size)])])
    assert aws_app.on_upload(event, CONTEXT) == {"batchItemFailures": []}  # no retries into the DLQ
    assert read(s3, "output/gone.png.json")["error"]["code"] == "NotFound"
    assert read(s3, "errors/gone.png.json") == read(s3, "output/gone.png.json")


# --- a bug on one image ---


def test_a_bug_reading_one_image_is_its_error_record_and_the_batch_goes_on(aws_app: Any, s3: Any, monkeypatch) -> None:
    """The same bytes would fail every retry: the input ends with an ``Unreadable`` error record (the bug is
    logged), its neighbours with results, and nothing is handed back for a retry into the DLQ."""
    from handler import imaging, workers

    poison = png_bytes(draw_seven(90))
    real = imaging.candidates

    def candidates(data: bytes, max_pixels: int) -> imaging.Candidates:
        if data == poison:
            raise IndexError("a segmenter bug")
        return real(data, max_pixels)

    monkeypatch.setattr(workers.imaging, "candidates", candidates)
    uploads = [upload(s3, "input/a.png"), upload(s3, "input/poison.png", poison), upload(s3, "input/b.png")]
    event = sqs_wrap([s3_notification(BUCKET, [item]) for item in uploads])
    assert aws_app.on_upload(event, CONTEXT) == {"batchItemFailures": []}
    assert read(s3, "output/poison.png.json")["error"]["code"] == "Unreadable"
    assert [key for key in keys(s3, "output/") if "label" in read(s3, key)] == [
        "output/a.png.json",
        "output/b.png.json",
    ]
    assert keys(s3, "errors/") == ["errors/poison.png.json"]


# --- keys too long for a record next to them ---


def test_an_input_whose_record_key_would_pass_1024_bytes_gets_one_findable_record(aws_app: Any, s3: Any) -> None:
    key = "input/" + "ü" * 505 + ".png"  # 1,020 bytes: S3 takes it, output/<key>.json would not fit
    assert len(key.encode()) <= 1024 < len(("output/" + key[6:] + ".json").encode())
    event = s3_notification(BUCKET, [upload(s3, key)])
    assert aws_app.on_upload(event, CONTEXT)["counts"]["result"] == 1
    (record_key,) = keys(s3, "output/")
    assert record_key.startswith("output/" + LONG_KEYS) and read(s3, record_key)["source"]["key"] == key
    etag = event["Records"][0]["s3"]["object"]["eTag"]
    batch = {"Items": [{"Key": key, "Etag": f'"{etag}"'}], "BatchInput": {"bucket": BUCKET}}
    assert aws_app.bulk(batch, CONTEXT)["counts"]["skipped"] == 1


# --- a crash between writing a record and bringing its errors/ mirror in step ---


def crash_after_the_put(monkeypatch: pytest.MonkeyPatch, storage: Any) -> None:
    """Kill the invocation at the first DELETE: the mirror of the error the new record replaced is left."""
    real = storage.delete_if_unchanged

    def killed(*args: Any, **kwargs: Any) -> None:
        monkeypatch.setattr(storage, "delete_if_unchanged", real)  # only the first run dies
        raise SystemExit("killed between the PUT and the DELETE")

    monkeypatch.setattr(storage, "delete_if_unchanged", killed)


def test_a_crash_before_the_mirror_is_removed_is_finished_by_the_bulk_rerun(
    app: Any, s3: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    app.on_upload(s3_notification(BUCKET, [upload(s3, "input/fixed.png", b"garbage")]), CONTEXT)
    key, etag, size = upload(s3, "input/fixed.png")
    crash_after_the_put(monkeypatch, app.service().storage)
    with pytest.raises(SystemExit):
        app.on_upload(s3_notification(BUCKET, [(key, etag, size)]), CONTEXT)
    assert "label" in read(s3, "output/fixed.png.json") and keys(s3, "errors/") == ["errors/fixed.png.json"]
    batch = {"Items": [{"Key": key, "Etag": f'"{etag}"', "Size": size}], "BatchInput": {"bucket": BUCKET}}
    assert app.bulk(batch, CONTEXT)["counts"]["result"] == 1  # record and mirror disagree: not "done", so redone
    assert keys(s3, "errors/") == [] and keys(s3, "output/") == ["output/fixed.png.json"]
    assert_record_in_step(s3, BUCKET, key)
    assert app.bulk(batch, CONTEXT)["counts"]["skipped"] == 1


def test_a_crash_before_the_mirror_is_removed_is_finished_by_the_redelivered_message(
    app: Any, s3: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    app.on_upload(s3_notification(BUCKET, [upload(s3, "input/fixed.png", b"garbage")]), CONTEXT)
    event = sqs_wrap([s3_notification(BUCKET, [upload(s3, "input/fixed.png")])])
    crash_after_the_put(monkeypatch, app.service().storage)
    with pytest.raises(SystemExit):
        app.on_upload(event, CONTEXT)
    assert app.on_upload(event, CONTEXT) == {"batchItemFailures": []}
    assert keys(s3, "errors/") == [] and keys(s3, "output/") == ["output/fixed.png.json"]


def test_a_crash_before_an_error_is_mirrored_is_finished_by_the_redelivered_message(
    app: Any, s3: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The record is written, the invocation dies before its errors/ mirror: the retry copies the record as
    it was written (not the retry's own body, whose timestamp differs)."""
    storage = app.service().storage
    real = storage.put_record

    def killed(bucket: str, key: str, *args: Any, **kwargs: Any) -> str:
        if key.startswith("errors/"):
            monkeypatch.setattr(storage, "put_record", real)
            raise SystemExit("killed before the mirror")
        return real(bucket, key, *args, **kwargs)

    monkeypatch.setattr(storage, "put_record", killed)
    event = sqs_wrap([s3_notification(BUCKET, [upload(s3, "input/broken.png", b"garbage")])])
    with pytest.raises(SystemExit):
        app.on_upload(event, CONTEXT)
    assert keys(s3, "errors/") == []
    assert app.on_upload(event, CONTEXT) == {"batchItemFailures": []}
    assert assert_record_in_step(s3, BUCKET, "input/broken.png")["error"]["code"] == "Unsupported"


# --- time and memory bounds ---


@pytest.mark.parametrize("helpers", [0, 1], ids=["one process: checked per image", "helpers: checked per chunk"])
def test_inputs_that_do_not_fit_before_the_deadline_are_handed_back_not_cut_off(
    app: Any, s3: Any, helpers: int
) -> None:
    from handler.workers import Workers

    service = app.service()
    service.workers = Workers(helpers)
    service.settings = replace(service.settings, chunk_items=4)
    objects = [upload(s3, f"input/slow/{i}.png") for i in range(12)]
    event = sqs_wrap([s3_notification(BUCKET, [obj]) for obj in objects])
    clock = Clock(remaining_ms=12_000, step=3_000)  # each look at the clock costs three seconds
    response = app.on_upload(event, clock)
    retried = {item["itemIdentifier"] for item in response["batchItemFailures"]}
    recorded = {k.removeprefix("output/").removesuffix(".json") for k in keys(s3, "output/")}
    assert retried and recorded  # some done, the rest handed back
    for record, (key, _, _) in zip(event["Records"], objects, strict=True):
        assert (record["messageId"] in retried) != (key.removeprefix("input/") in recorded)
    assert app.on_upload(event, CONTEXT) == {"batchItemFailures": []}
    assert len(keys(s3, "output/")) == 12
    service.workers.close()


def test_a_batch_is_fetched_and_labelled_in_bounded_chunks(app: Any, s3: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    service: Service = app.service()
    service.settings = replace(service.settings, chunk_items=4)
    held: list[int] = []
    real_label = __import__("handler.pipeline", fromlist=["label"]).label

    def counting_label(items: Any, *args: Any, **kwargs: Any) -> Any:
        held.append(len(items))
        return real_label(items, *args, **kwargs)

    monkeypatch.setattr("handler.pipeline.label", counting_label)
    sources = [
        Source(BUCKET, key, etag, size) for key, etag, size in (upload(s3, f"input/c/{i}.png") for i in range(10))
    ]
    outcomes = process(sources, service, deadline=Deadline(CONTEXT.get_remaining_time_in_millis))
    assert [o.status for o in outcomes] == ["result"] * 10
    assert held == [4, 4, 2]  # never more than one chunk of bodies in memory


class _FirstChunkOnly(Deadline):
    """A deadline that lets the batch's first chunk through and stops it before the second."""

    def __init__(self) -> None:
        super().__init__(lambda: 60_000)
        self.chunks = 0

    def allows(self) -> bool:
        return self.chunks < 1

    def took(self, seconds: float) -> None:
        self.chunks += 1


def test_no_request_of_a_batch_outlives_it(app: Any, s3: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The S3 threads live as long as the container, so a batch must itself wait for what it started: the
    next chunk, fetched ahead of a deadline that then stops the batch, is finished or cancelled on return."""
    service: Service = app.service()
    service.settings = replace(service.settings, chunk_items=2)
    running: set[str] = set()
    started: list[str] = []
    real_fetch = service.storage.fetch

    def slow_fetch(source: Source, max_bytes: int) -> Any:
        running.add(source.key)
        started.append(source.key)
        try:
            time.sleep(0.2)
            return real_fetch(source, max_bytes)
        finally:
            running.discard(source.key)

    monkeypatch.setattr(service.storage, "fetch", slow_fetch)
    sources = [
        Source(BUCKET, key, etag, size) for key, etag, size in (upload(s3, f"input/d/{i}.png") for i in range(6))
    ]
    outcomes = process(sources, service, deadline=_FirstChunkOnly())
    assert [o.status for o in outcomes] == ["result"] * 2 + ["deferred"] * 4
    assert set(started) >= {"input/d/2.png", "input/d/3.png"}  # the second chunk was being fetched ahead
    assert running == set()
    assert process(sources[2:4], service)[0].status == "result"  # the same threads serve the next batch


# --- bulk over part of the input prefix ---


def test_bulk_over_a_sub_prefix_keeps_record_keys_relative_to_the_input_prefix(app: Any, s3: Any) -> None:
    upload(s3, "input/x.png", b"garbage")
    upload(s3, "input/2024/x.png")
    app.on_upload(s3_notification(BUCKET, [("input/x.png", "", 7)]), CONTEXT)
    body = run_prefix(app.service(), BUCKET, "sub", prefix="input/2024/")
    assert body["counts"]["result"] == 1 and body["total"] == 1
    assert keys(s3, "output/") == ["output/2024/x.png.json", "output/x.png.json"]
    assert keys(s3, "errors/") == ["errors/x.png.json"]  # the other input's record is untouched
    assert read(s3, "output/x.png.json")["error"]["code"] == "Unsupported"


# --- malformed notifications ---


@pytest.mark.parametrize(
    "damage",
    [{"eventName": 42}, {"eventName": None}, {"s3": {"object": {"key": None}}}, {"s3": {"object": {"key": 7}}}],
    ids=["eventName number", "eventName null", "key null", "key number"],
)
def test_a_malformed_notification_fails_alone(app: Any, s3: Any, damage: dict[str, Any]) -> None:
    good = s3_notification(BUCKET, [upload(s3, "input/fine.png")])
    bad = s3_notification(BUCKET, [upload(s3, "input/other.png")])
    record = bad["Records"][0]
    for field, value in damage.items():
        if isinstance(value, dict):
            record["s3"]["object"].update(value["object"])
        else:
            record[field] = value
    event = sqs_wrap([good, bad])
    response = app.on_upload(event, CONTEXT)
    assert response == {"batchItemFailures": [{"itemIdentifier": event["Records"][1]["messageId"]}]}
    assert keys(s3, "output/") == ["output/fine.png.json"]


# --- the model's manifest is checked against the model ---


def version_with(model_uri: str, tmp_path: Path, **changes: Any) -> str:
    folder = tmp_path / "version"
    shutil.copytree(model_uri, folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest.update(changes)
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return str(folder)


@pytest.mark.parametrize("classes", [string.printable[:73], "0123456789"], ids=["73 classes", "10 classes"])
def test_a_manifest_whose_classes_do_not_match_the_model_is_refused_at_load(
    model_uri: str, tmp_path: Path, classes: str
) -> None:
    from handler import model

    with pytest.raises(ModelError, match=f"{len(classes)} classes but model.tflite has 47 outputs"):
        model.load(version_with(model_uri, tmp_path, classes=classes), tmp_path / "cache")


def test_a_malformed_files_entry_is_a_model_error(model_uri: str, tmp_path: Path) -> None:
    from handler import model

    with pytest.raises(ModelError, match="sha256"):
        model.load(version_with(model_uri, tmp_path, files={"model.tflite": "abc"}), tmp_path / "cache")


def test_a_missing_s3_model_names_model_uri(s3: Any, tmp_path: Path) -> None:
    from handler import model
    from handler.storage import Storage

    uri = f"s3://{BUCKET}/models/no-such-version/"
    with pytest.raises(ModelError, match=f"MODEL_URI={uri}"):
        model.load(uri, tmp_path, fetch=Storage(s3).download)


def test_the_lambda_module_loads_and_verifies_the_model_at_init(model_uri: str, tmp_path: Path) -> None:
    """Lambda runs module import in its init phase: a bad model fails there, before any event."""
    env = {**os.environ, "MODEL_URI": version_with(model_uri, tmp_path, classes=string.printable[:73])}
    done = subprocess.run(
        [sys.executable, "-c", "import handler.app"], cwd=ROOT, env=env, capture_output=True, text=True, check=False
    )
    assert done.returncode != 0 and "73 classes" in done.stderr


# --- the label CLI with any file name ---


def test_label_writes_valid_utf8_for_file_names_that_are_not(tmp_path: Path) -> None:
    folder = Path(os.fsdecode(tmp_path))
    (folder / os.fsdecode(b"caf\xe9.png")).write_bytes(SEVEN)
    (folder / "plain.png").write_bytes(SEVEN)
    done = subprocess.run(
        [sys.executable, "-m", "handler", "label", str(folder)],
        cwd=ROOT,
        env={**os.environ, "LC_ALL": "C.UTF-8", "PYTHONIOENCODING": ""},
        capture_output=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.decode("utf-8").splitlines()  # strict: raises on invalid UTF-8
    keys_seen = sorted(Path(json.loads(line)["source"]["key"]).name for line in lines)
    assert keys_seen == ["caf\\xe9.png", "plain.png"]


# --- the run summary in constant memory ---


def test_run_results_are_folded_in_constant_memory() -> None:
    entry = json.dumps({"counts": {"result": 60, "error": 4}, "error_codes": {"Corrupt": 4}, "failures": []})

    def chunks(batches: int) -> Any:  # a JSONL ResultWriter file, never held whole
        line = (entry + "\n").encode()
        for _ in range(batches // 1000):
            yield line * 1000

    tracemalloc.start()
    totals = RunTotals()
    for value in iter_json_values(chunks(200_000)):  # 12.8 M inputs' worth of batch results
        totals.add(value)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert totals.as_dict()["total"] == 200_000 * 64
    assert peak < 5_000_000  # bytes: one chunk and one value, not the file


# --- bulk runs in JSON Lines mode ---


def test_bulk_jsonl_mode_writes_one_object_per_batch_and_a_rerun_skips_it(app: Any, s3: Any) -> None:
    service = app.service()
    service.settings = replace(service.settings, bulk_output="jsonl")
    for i in range(5):
        upload(s3, f"input/j/{i}.png", SEVEN if i != 3 else b"garbage")
    first = run_prefix(service, BUCKET, "j1", batch_size=4)
    assert first["counts"]["result"] == 4 and first["counts"]["error"] == 1
    batches = keys(s3, "output/_batches/")
    assert len(batches) == 2 and keys(s3, "errors/") == []  # no per-input objects, no DELETEs
    lines = [json.loads(line) for key in batches for line in s3.get_object(Bucket=BUCKET, Key=key)["Body"].iter_lines()]
    assert sorted(r["source"]["key"] for r in lines) == [f"input/j/{i}.png" for i in range(5)]
    assert {r["schema"] for r in lines} == {"handwriting-ocr/result/2", "handwriting-ocr/error/1"}
    second = run_prefix(service, BUCKET, "j2", batch_size=4)
    assert second["counts"]["skipped"] == 5 and keys(s3, "output/_batches/") == batches
    upload(s3, "input/j/4.png", png_bytes(draw_seven(120)))  # a changed input: its batch is redone
    third = run_prefix(service, BUCKET, "j3", batch_size=4)
    assert third["counts"]["skipped"] == 4 and third["counts"]["result"] == 1
