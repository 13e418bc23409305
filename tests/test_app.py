"""Lambda entry points on real-shaped S3 and SQS events, against moto's mocked S3."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from handler.records import Source
from infra.local_s3 import LocalContext, s3_notification, sqs_wrap
from tests.conftest import BUCKET, draw_seven, png_bytes

CONTEXT = LocalContext()


def counts(**nonzero: int) -> dict[str, int]:
    """A batch's full count dict: every status, zero unless given."""
    from handler.bulk import STATUSES

    return {status: nonzero.get(status, 0) for status in STATUSES}


def upload(s3: Any, key: str, body: bytes) -> tuple[str, str, int]:
    etag = s3.put_object(Bucket=BUCKET, Key=key, Body=body)["ETag"].strip('"')
    return key, etag, len(body)


def record(s3: Any, key: str) -> dict[str, Any]:
    return json.loads(s3.get_object(Bucket=BUCKET, Key=key)["Body"].read())


def keys(s3: Any, prefix: str) -> list[str]:
    return sorted(o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("Contents", []))


@pytest.fixture
def seven_png() -> bytes:
    return png_bytes(draw_seven())


def test_s3_event_with_encoded_keys_and_several_records(app: Any, s3: Any, seven_png: bytes) -> None:
    names = ["input/plain.png", "input/with space/seven.png", "input/ünï+cödé/7 (copy).png"]
    event = s3_notification(BUCKET, [upload(s3, name, seven_png) for name in names])
    assert "with+space" in json.dumps(event) and "%2B" in json.dumps(event)  # encoded as S3 sends them
    response = app.on_upload(event, CONTEXT)
    assert response["counts"]["result"] == 3
    for name in names:
        body = record(s3, "output/" + name.removeprefix("input/") + ".json")
        assert body["source"]["key"] == name
        assert body["label"] in app.service().classifier.classes
        assert len(body["top"]) == 5


def test_bad_object_gets_an_error_record_and_the_batch_goes_on(app: Any, s3: Any, seven_png: bytes) -> None:
    objects = [
        upload(s3, "input/good.png", seven_png),
        upload(s3, "input/bad.png", b"\x89PNG\r\n\x1a\nnot really"),
        upload(s3, "input/empty.jpg", b""),
        upload(s3, "input/blank.png", png_bytes(Image.new("L", (100, 100), 240))),
    ]
    response = app.on_upload(s3_notification(BUCKET, objects), CONTEXT)
    assert response["counts"] == counts(result=1, error=3)
    assert "label" in record(s3, "output/good.png.json")
    codes = {k: record(s3, k)["error"]["code"] for k in keys(s3, "output/") if k != "output/good.png.json"}
    assert codes == {
        "output/bad.png.json": "Corrupt",
        "output/empty.jpg.json": "Empty",
        "output/blank.png.json": "NoInk",
    }
    assert keys(s3, "errors/") == ["errors/bad.png.json", "errors/blank.png.json", "errors/empty.jpg.json"]
    assert all(record(s3, "errors/" + k.removeprefix("output/")) == record(s3, k) for k in codes)


def test_object_deleted_before_processing_gets_a_not_found_record(app: Any, s3: Any) -> None:
    response = app.on_upload(s3_notification(BUCKET, [("input/gone.png", "abc", 10)]), CONTEXT)
    assert response["counts"]["error"] == 1
    assert record(s3, "errors/gone.png.json")["error"]["code"] == "NotFound"


def test_object_over_the_size_limit_is_refused_without_decoding(app: Any, s3: Any, monkeypatch) -> None:
    from dataclasses import replace

    monkeypatch.setattr(app, "settings", replace(app.settings, max_object_bytes=100))
    app.service.cache_clear()
    app.on_upload(s3_notification(BUCKET, [upload(s3, "input/big.png", b"\x89PNG" + b"\x00" * 500)]), CONTEXT)
    assert record(s3, "errors/big.png.json")["error"]["code"] == "TooLarge"


def test_keys_outside_the_input_prefix_and_test_events_are_ignored(app: Any, s3: Any, seven_png: bytes) -> None:
    event = s3_notification(BUCKET, [upload(s3, "output/looks-like-input.png", seven_png)])
    assert app.on_upload(event, CONTEXT)["counts"]["result"] == 0
    test_event = {"Service": "Amazon S3", "Event": "s3:TestEvent", "Bucket": BUCKET, "Time": "2026-11-24T12:00:00Z"}
    assert sum(app.on_upload(test_event, CONTEXT)["counts"].values()) == 0
    assert keys(s3, "output/") == ["output/looks-like-input.png"] and keys(s3, "errors/") == []


def test_repeated_events_are_harmless(app: Any, s3: Any, seven_png: bytes) -> None:
    event = s3_notification(BUCKET, [upload(s3, "input/again.png", seven_png)])
    first = app.on_upload(event, CONTEXT)
    second = app.on_upload(event, CONTEXT)
    assert first["counts"] == second["counts"] == counts(result=1)
    assert keys(s3, "output/") == ["output/again.png.json"] and keys(s3, "errors/") == []


def test_reupload_that_fixes_an_input_leaves_exactly_one_record(app: Any, s3: Any, seven_png: bytes) -> None:
    app.on_upload(s3_notification(BUCKET, [upload(s3, "input/fixed.png", b"garbage")]), CONTEXT)
    assert keys(s3, "errors/") == ["errors/fixed.png.json"] and keys(s3, "output/") == ["output/fixed.png.json"]
    app.on_upload(s3_notification(BUCKET, [upload(s3, "input/fixed.png", seven_png)]), CONTEXT)
    assert keys(s3, "errors/") == [] and keys(s3, "output/") == ["output/fixed.png.json"]


def test_sqs_batch_reports_only_messages_whose_inputs_could_not_be_recorded(
    app: Any, s3: Any, seven_png: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    good = s3_notification(BUCKET, [upload(s3, "input/ok.png", seven_png)])
    corrupt = s3_notification(BUCKET, [upload(s3, "input/corrupt.png", b"nope")])
    unlucky = s3_notification(BUCKET, [upload(s3, "input/unlucky.png", seven_png)])
    test_event = {"Service": "Amazon S3", "Event": "s3:TestEvent", "Bucket": BUCKET}
    event = sqs_wrap([good, corrupt, unlucky, test_event])
    storage = app.service().storage
    real_fetch = storage.fetch

    def flaky_fetch(source, max_bytes):
        if source.key == "input/unlucky.png":
            raise ConnectionError("S3 unavailable")
        return real_fetch(source, max_bytes)

    monkeypatch.setattr(storage, "fetch", flaky_fetch)
    response = app.on_upload(event, CONTEXT)
    assert response == {"batchItemFailures": [{"itemIdentifier": event["Records"][2]["messageId"]}]}
    assert keys(s3, "output/") == ["output/corrupt.png.json", "output/ok.png.json"]
    assert keys(s3, "errors/") == ["errors/corrupt.png.json"]


def test_direct_s3_event_with_an_infrastructure_failure_raises_for_a_retry(
    app: Any, s3: Any, seven_png: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    event = s3_notification(BUCKET, [upload(s3, "input/a.png", seven_png)])
    storage = app.service().storage
    monkeypatch.setattr(storage, "put_record", lambda *a, **k: (_ for _ in ()).throw(ConnectionError("down")))
    with pytest.raises(RuntimeError, match="not recorded"):
        app.on_upload(event, CONTEXT)


def test_bulk_batch_labels_items_and_skips_those_already_done(app: Any, s3: Any, seven_png: bytes) -> None:
    items = []
    for i in range(3):
        key, etag, size = upload(s3, f"input/bulk/{i}.png", seven_png)
        items.append({"Key": key, "ETag": f'"{etag}"', "Size": size})
    event = {"Items": items, "BatchInput": {"bucket": BUCKET, "run_id": "r1"}}
    assert app.bulk(event, CONTEXT)["counts"] == counts(result=3)
    assert app.bulk(event, CONTEXT)["counts"] == counts(skipped=3)
    key, etag, size = upload(s3, "input/bulk/1.png", png_bytes(draw_seven(150)))  # changed since: redo it
    items[1] = {"Key": key, "ETag": f'"{etag}"', "Size": size}
    assert app.bulk(event, CONTEXT)["counts"] == counts(result=1, skipped=2)


def test_bulk_looks_up_a_new_input_with_one_head_and_a_done_one_with_two(app: Any, s3: Any, seven_png: bytes) -> None:
    """The errors/ mirror is only worth asking about when the record says the input is done."""
    heads: list[str] = []
    app.service().storage.s3.meta.events.register(
        "before-call.s3.HeadObject", lambda params, **_: heads.append(params["url_path"].split("/")[1])
    )
    key, etag, size = upload(s3, "input/bulk/new.png", seven_png)
    event = {
        "Items": [{"Key": key, "ETag": f'"{etag}"', "Size": size}],
        "BatchInput": {"bucket": BUCKET, "run_id": "r1"},
    }
    assert app.bulk(event, CONTEXT)["counts"] == counts(result=1)
    assert heads == ["output"]
    heads.clear()
    assert app.bulk(event, CONTEXT)["counts"] == counts(skipped=1)
    assert heads == ["output", "errors"]


def test_summarize_folds_result_writer_output_into_the_run_summary(app: Any, s3: Any) -> None:
    ok = {
        "counts": counts(result=5, error=1, skipped=2),
        "error_codes": {"Corrupt": 1},
        "failures": [],
    }
    succeeded = [{"Status": "SUCCEEDED", "Output": json.dumps(ok)}] * 2
    failed = [{"Status": "FAILED", "Error": "Lambda.Unknown", "Input": json.dumps({"Items": [{"Key": "input/x.png"}]})}]
    s3.put_object(Bucket=BUCKET, Key="runs/r1/map/SUCCEEDED_0.json", Body=json.dumps(succeeded))
    s3.put_object(Bucket=BUCKET, Key="runs/r1/map/FAILED_0.json", Body=json.dumps(failed))
    manifest = {
        "DestinationBucket": BUCKET,
        "ResultFiles": {
            "SUCCEEDED": [{"Key": "runs/r1/map/SUCCEEDED_0.json"}],
            "FAILED": [{"Key": "runs/r1/map/FAILED_0.json"}],
            "PENDING": [],
        },
    }
    s3.put_object(Bucket=BUCKET, Key="runs/r1/map/manifest.json", Body=json.dumps(manifest))
    event = {"run_id": "r1", "ResultWriterDetails": {"Bucket": BUCKET, "Key": "runs/r1/map/manifest.json"}}
    assert app.summarize(event, CONTEXT)["total"] == 17
    summary = record(s3, "runs/r1/summary.json")
    assert summary["counts"] == counts(result=10, error=2, skipped=4, failed=1)
    assert summary["failures"] == [{"key": "input/x.png", "reason": "Lambda.Unknown"}]
    assert summary["error_codes"] == {"Corrupt": 2}


def test_sqs_message_that_is_not_an_s3_notification_fails_alone(app: Any, s3: Any, seven_png: bytes) -> None:
    event = sqs_wrap([s3_notification(BUCKET, [upload(s3, "input/fine.png", seven_png)])])
    poison = dict(event["Records"][0], messageId="poison", body="{not json")
    event["Records"].append(poison)
    assert app.on_upload(event, CONTEXT) == {"batchItemFailures": [{"itemIdentifier": "poison"}]}
    assert keys(s3, "output/") == ["output/fine.png.json"]


def test_bulk_treats_a_forbidden_record_head_as_not_yet_recorded(
    app: Any, s3: Any, seven_png: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Least-privilege roles have no s3:ListBucket, so S3 answers HEAD on a missing record with 403."""
    from botocore.exceptions import ClientError

    key, etag, size = upload(s3, "input/bulk/x.png", seven_png)
    storage = app.service().storage
    forbidden = ClientError({"Error": {"Code": "403", "Message": "Forbidden"}}, "HeadObject")
    monkeypatch.setattr(storage.s3, "head_object", lambda **kwargs: (_ for _ in ()).throw(forbidden))
    event = {"Items": [{"Key": key, "ETag": etag, "Size": size}], "BatchInput": {"bucket": BUCKET}}
    assert app.bulk(event, CONTEXT)["counts"]["result"] == 1


def test_run_totals_cap_the_listed_failures_but_count_them_all() -> None:
    from handler.bulk import MAX_LISTED_FAILURES, RunTotals

    failure = {"key": "input/x.png", "reason": "ConnectionError"}
    batch = {"counts": {"failed": 600}, "error_codes": {}, "failures": [failure] * 600}
    totals = RunTotals()
    totals.add(batch)
    totals.add(batch)
    merged = totals.as_dict()
    assert merged["counts"]["failed"] == 1200 and merged["total"] == 1200
    assert len(merged["failures"]) == MAX_LISTED_FAILURES and merged["failures_truncated"]


DOCS = Path(__file__).resolve().parent / "fixtures" / "aws_docs"


def test_bulk_skips_finished_inputs_given_the_item_shape_step_functions_documents(
    app: Any, s3: Any, seven_png: bytes
) -> None:
    """The S3 item reader says ``Etag`` (quoted) and epoch ``LastModified``; a rerun must still skip."""
    event = json.loads((DOCS / "distributed-map-listobjectsv2-batch.json").read_text())
    event["BatchInput"]["bucket"] = BUCKET
    for item in event["Items"]:
        etag = upload(s3, item["Key"], seven_png)[1]
        item["Etag"] = f'"{etag}"'  # the documented spelling and quoting, with this object's real ETag
        assert "ETag" not in item and isinstance(item["LastModified"], int)
    assert app.bulk(event, CONTEXT)["counts"] == counts(result=2)
    assert app.bulk(event, CONTEXT)["counts"] == counts(skipped=2)


def test_summarize_records_a_failed_map_so_no_run_ends_without_a_summary(app: Any, s3: Any) -> None:
    event = json.loads(
        (Path(__file__).resolve().parent.parent / "infra" / "events" / "summarize-failed.json").read_text()
    )
    event["bucket"] = BUCKET
    response = app.summarize(event, CONTEXT)
    assert response["status"] == "FAILED" and response["total"] == 0
    summary = record(s3, "runs/example-run/summary.json")
    assert summary["status"] == "FAILED"
    assert summary["error"]["error"] == "States.ExceedToleratedFailureThreshold"


def test_the_runtime_package_imports_nothing_outside_itself() -> None:
    """The Lambda image ships handler/ and models/ only: no module in handler/ may import infra, training or tests."""
    import ast

    root = Path(__file__).resolve().parent.parent / "handler"
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.module:
                names.append(node.module)
            assert not [n for n in names if n.split(".")[0] in ("infra", "training", "tests", "benchmarks")], path


def test_the_documented_s3_notification_yields_its_object(app: Any) -> None:
    """The S3 user guide's example event: outside the input prefix it is ignored; under it, read in full."""
    event = json.loads((DOCS / "s3-event-notification.json").read_text())
    assert app.sources_from_s3_event(event) == []  # "HappyFace.jpg" is not under input/
    event["Records"][0]["s3"]["object"]["key"] = "input/Happy+Face.jpg"  # keys arrive URL-encoded: '+' is a space
    (source,) = app.sources_from_s3_event(event)
    assert source == Source("amzn-s3-demo-bucket", "input/Happy Face.jpg", "d41d8cd98f00b204e9800998ecf8427e", 1024)
