"""Lambda entry points: thin adapters from AWS events to :mod:`handler.pipeline`.

- ``on_upload``: S3 event notifications, directly or wrapped in SQS messages (partial batch failures)
- ``bulk``: one Distributed Map batch of keys; ``summarize``: the run summary after the map
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from functools import cache
from typing import Any
from urllib.parse import unquote_plus

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.data_classes import S3Event, SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from handler.config import Settings
from handler.pipeline import RETRY, Deadline, Outcome, Service, batch_result, is_input, process
from handler.records import Source

logger = Logger()
metrics = Metrics()
settings = Settings.from_env()  # fails the cold start with a clear message on a bad setting
Handler = Callable[[dict[str, Any], LambdaContext], dict[str, Any]]


def traced(handler: Handler) -> Handler:
    """X-Ray subsegments from the SDK (each S3 call, the batch) when XRAY_SDK=true. Importing the SDK costs
    about 150 ms of every cold start; Lambda's own tracing (Tracing: Active) records invocations without it."""
    if not settings.xray_sdk:
        return handler
    from aws_lambda_powertools import Tracer

    return Tracer().capture_lambda_handler(handler)


@cache
def service() -> Service:
    """Loaded once per container: model verified against its manifest, S3 client with retries."""
    started = time.perf_counter()
    loaded = Service.create(settings)
    logger.info(
        "model loaded",
        model_version=loaded.model_info.version,
        seconds=round(time.perf_counter() - started, 3),
    )
    return loaded


service()  # Lambda's init phase: a missing or inconsistent model fails here, naming MODEL_URI, before any event
service().storage.warm_up()  # the S3 client is built while the runtime fetches the first event


class NotAnS3Notification(ValueError):
    """A message body that is not an S3 event notification (or one with fields of the wrong type)."""


def sources_from_s3_event(event: Any) -> list[Source]:
    """Every record's object (keys URL-decoded), minus test events and keys outside the input prefix.

    Raises :class:`NotAnS3Notification` for anything malformed, so only that message fails.
    """
    if not isinstance(event, dict) or "Records" not in event:
        if isinstance(event, dict) and event.get("Event") == "s3:TestEvent":
            return []
        raise NotAnS3Notification("no Records: not an S3 event notification")
    sources = []
    try:
        for record in S3Event(event).records:
            name, key, bucket = record.event_name, record.s3.get_object.key, record.s3.bucket.name
            if not all(isinstance(value, str) and value for value in (name, key, bucket)):
                raise NotAnS3Notification(f"eventName, key and bucket must be non-empty strings: {name!r} {key!r}")
            if not name.startswith("ObjectCreated"):
                continue
            obj = record.s3.get_object
            key = unquote_plus(key)
            if not is_input(key, settings.input_prefix):
                logger.warning("ignoring key outside the input prefix", key=key)
                continue
            etag, size = obj.get("eTag"), obj.get("size")
            sources.append(
                Source(
                    bucket,
                    key,
                    etag if isinstance(etag, str) and etag else None,
                    size if isinstance(size, int) else None,
                )
            )
    except NotAnS3Notification:
        raise
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        raise NotAnS3Notification(f"malformed S3 notification: {exc!r}") from exc
    return sources


def _record_metrics(outcomes: list[Outcome], seconds: float) -> None:
    counts = batch_result(outcomes)["counts"]
    metrics.add_metric(name="ImagesLabelled", unit=MetricUnit.Count, value=counts["result"])
    metrics.add_metric(name="ImageErrors", unit=MetricUnit.Count, value=counts["error"])
    metrics.add_metric(name="ImagesSkipped", unit=MetricUnit.Count, value=counts["skipped"])
    metrics.add_metric(name="InfrastructureFailures", unit=MetricUnit.Count, value=counts["failed"])
    metrics.add_metric(name="BatchLatency", unit=MetricUnit.Milliseconds, value=round(seconds * 1000, 1))
    metrics.add_metric(name="ImagesDeferred", unit=MetricUnit.Count, value=counts["deferred"])
    for outcome in outcomes:
        if outcome.status == "failed":
            logger.error("input failed; will be retried", key=outcome.source.key, reason=outcome.failure)
        elif outcome.status == "deferred":
            logger.warning("input deferred: no time left in this invocation", key=outcome.source.key)


def _run(
    sources: list[Source], context: LambdaContext | None, *, skip_existing: bool = False, jsonl: bool = False
) -> list[Outcome]:
    started = time.perf_counter()
    deadline = Deadline(context.get_remaining_time_in_millis) if context else None
    outcomes = process(sources, service(), skip_existing=skip_existing, deadline=deadline, jsonl=jsonl)
    _record_metrics(outcomes, time.perf_counter() - started)
    return outcomes


def _on_sqs(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    """All messages' images are labelled as one batch; only messages with a failed input are retried."""
    per_message: dict[str, list[Source]] = {}
    unreadable: set[str] = set()
    for record in event["Records"]:
        try:
            per_message[record["messageId"]] = sources_from_s3_event(json.loads(record["body"]))
        except (ValueError, KeyError, TypeError):
            logger.exception("message is not an S3 notification", message_id=record["messageId"])
            unreadable.add(record["messageId"])
    outcomes = _run([source for sources in per_message.values() for source in sources], context)
    failed = {(o.source.bucket, o.source.key) for o in outcomes if o.status in RETRY}

    def check(record: SQSRecord) -> None:
        if record.message_id in unreadable:
            raise ValueError("not an S3 event notification; left for the dead-letter queue")
        broken = [s.key for s in per_message[record.message_id] if (s.bucket, s.key) in failed]
        if broken:
            raise RuntimeError(f"inputs not recorded, will retry: {broken}")

    from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response

    processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)  # report, not raise
    return process_partial_response(event=event, record_handler=check, processor=processor, context=context)


@logger.inject_lambda_context
@traced
@metrics.log_metrics
def on_upload(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    """S3 uploads -> records. Accepts S3 notifications directly or through SQS."""
    records = event.get("Records", [])
    if records and records[0].get("eventSource") == "aws:sqs":
        return _on_sqs(event, context)
    outcomes = _run(sources_from_s3_event(event), context)
    failed = [o.source.key for o in outcomes if o.status in RETRY]
    if failed:
        raise RuntimeError(f"{len(failed)} inputs not recorded (retried by Lambda): {failed[:10]}")
    return batch_result(outcomes)


def source_from_map_item(item: dict[str, Any], bucket: str) -> Source:
    """One Distributed Map item. Step Functions' S3 item reader spells it ``Etag`` (with quotes) and
    gives ``LastModified`` as epoch seconds; ListObjectsV2 and our own events say ``ETag``: take both."""
    etag = item.get("Etag", item.get("ETag")) or ""
    size = item.get("Size")
    return Source(bucket, item["Key"], str(etag).strip('"') or None, int(size) if size is not None else None)


@logger.inject_lambda_context
@traced
@metrics.log_metrics
def bulk(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    """One Distributed Map batch: ``{"Items": [{"Key", "Etag", "Size", ...}], "BatchInput": {"bucket"}}``."""
    bucket = event.get("BatchInput", {}).get("bucket") or settings.bucket
    sources = [
        source_from_map_item(item, bucket)
        for item in event.get("Items", [])
        if is_input(item["Key"], settings.input_prefix)
    ]
    return batch_result(_run(sources, context, skip_existing=True, jsonl=settings.bulk_output == "jsonl"))


@logger.inject_lambda_context
@traced
def summarize(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    """After the map: ``{"run_id", "ResultWriterDetails": {"Bucket", "Key"}}`` -> runs/<id>/summary.json.

    When the map itself failed the state machine sends ``{"run_id", "error": {"Error", "Cause"}}``
    instead; the summary then records the failure so a run never ends without one.
    """
    from handler.bulk import summarise_failed_run, summarise_result_writer  # not on the upload path

    if "error" in event:
        body = summarise_failed_run(service(), event.get("bucket") or settings.bucket, event["run_id"], event["error"])
        logger.error("bulk run failed", run_id=event["run_id"], error=body["error"])
    else:
        details = event["ResultWriterDetails"]
        body = summarise_result_writer(service(), details["Bucket"], details["Key"], event["run_id"])
        logger.info("run summarised", run_id=event["run_id"], counts=body["counts"])
    return {"run_id": event["run_id"], "status": body["status"], "counts": body["counts"], "total": body["total"]}
