"""Bulk runs over an existing prefix: batch results, resumable runs, and the run summary.

On AWS a Step Functions Distributed Map lists the prefix and hands key batches to the Lambda
(``app.bulk``); its ResultWriter stores every batch result and ``app.summarize`` folds them into
``runs/<id>/summary.json``. ``python -m handler bulk`` does the same in one process.
"""

from __future__ import annotations

import codecs
import json
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from itertools import islice
from typing import Any

from handler.pipeline import STATUSES, Service, batch_result, is_input, process
from handler.records import Source, utc_now

MAX_LISTED_FAILURES = 1000


class RunTotals:
    """Batch results folded as they arrive: constant work per batch, however long the run."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter({status: 0 for status in STATUSES})
        self.codes: Counter[str] = Counter()
        self.failures: list[dict[str, Any]] = []
        self.failures_seen = 0

    def add(self, result: dict[str, Any]) -> None:
        self.counts.update(result["counts"])
        self.codes.update(result.get("error_codes", {}))
        failures = result.get("failures", [])
        self.failures_seen += len(failures)
        self.failures.extend(failures[: max(0, MAX_LISTED_FAILURES - len(self.failures))])

    def as_dict(self) -> dict[str, Any]:
        return {
            "counts": {status: self.counts[status] for status in STATUSES},
            "total": sum(self.counts.values()),
            "error_codes": dict(self.codes),
            "failures": list(self.failures),
            "failures_truncated": self.failures_seen > len(self.failures),
        }


def summary(
    run_id: str,
    bucket: str,
    service: Service,
    merged: dict[str, Any],
    started_at: str,
    error: dict[str, str] | None = None,
) -> dict[str, Any]:
    return {
        "schema": "handwriting-ocr/run-summary/1",
        "run_id": run_id,
        "status": "FAILED" if error else "SUCCEEDED",
        **({"error": error} if error else {}),
        "bucket": bucket,
        "input_prefix": service.settings.input_prefix,
        "model": {"version": service.model_info.version, "sha256": service.model_info.sha256},
        "started_at": started_at,
        "finished_at": utc_now(),
        **merged,
    }


def summary_key(service: Service, run_id: str) -> str:
    return f"{service.settings.runs_prefix}{run_id}/summary.json"


def chunks(items: Iterable[Source], size: int) -> Iterator[list[Source]]:
    iterator = iter(items)
    while batch := list(islice(iterator, size)):
        yield batch


def run_prefix(
    service: Service,
    bucket: str,
    run_id: str,
    *,
    batch_size: int = 64,
    prefix: str | None = None,
    progress: Callable[[int, dict[str, int]], None] | None = None,
) -> dict[str, Any]:
    """Label every input under ``prefix`` (default: the whole input prefix) in this process, skipping
    what is already done. Record keys stay relative to the input prefix, whatever part is listed."""
    started = utc_now()
    input_prefix = service.settings.input_prefix
    listed = prefix or input_prefix
    if not listed.startswith(input_prefix):
        raise ValueError(f"{listed!r} is not under the input prefix {input_prefix!r}")
    sources = (s for s in service.storage.list_objects(bucket, listed) if is_input(s.key, input_prefix))
    totals = RunTotals()
    seen = 0
    jsonl = service.settings.bulk_output == "jsonl"
    for batch in chunks(sources, batch_size):
        totals.add(batch_result(process(batch, service, skip_existing=True, jsonl=jsonl)))
        seen += len(batch)
        if progress:
            progress(seen, dict(totals.counts))
    return write_summary(service, bucket, run_id, totals, started)


def iter_json_values(chunks: Iterable[bytes]) -> Iterator[Any]:
    """The values of a top-level JSON array, or of JSON lines, parsed as the bytes arrive: memory holds
    one chunk and one value, however large the file (a ResultWriter file can list millions of inputs)."""
    decoder = json.JSONDecoder()
    text_of = codecs.getincrementaldecoder("utf-8")()
    buffer, position, ended = "", 0, False
    stream = iter(chunks)
    while True:
        while position < len(buffer) and buffer[position] in " \t\r\n,[]":
            position += 1
        if position < len(buffer):
            try:
                value, end = decoder.raw_decode(buffer, position)
            except json.JSONDecodeError:
                if ended:
                    raise
            else:
                if end < len(buffer) or ended:  # a number at the very end of a chunk may continue in the next
                    yield value
                    position = end
                    continue
        if ended:
            return
        chunk = next(stream, None)
        ended = chunk is None
        buffer = buffer[position:] + text_of.decode(chunk or b"", final=ended)
        position = 0


def _batch_result_of(entry: dict[str, Any], status: str) -> dict[str, Any]:
    """One child execution's contribution, from a NONE (metadata + ``Output`` string) or COMPACT entry."""
    if "counts" in entry:  # COMPACT: the child's output itself
        return entry
    if status == "SUCCEEDED" and entry.get("Output"):
        output = entry["Output"]
        return json.loads(output) if isinstance(output, str) else output
    items = json.loads(entry.get("Input") or "{}").get("Items", []) if isinstance(entry.get("Input"), str) else []
    reason = entry.get("Error") or entry.get("Cause") or status
    return {
        "counts": {"failed": len(items)},
        "error_codes": {},
        "failures": [{"key": item.get("Key"), "reason": reason} for item in items],
    }


def summarise_result_writer(service: Service, bucket: str, manifest_key: str, run_id: str) -> dict[str, Any]:
    """Fold a Distributed Map's ResultWriter output (manifest + result files) into one summary, streaming
    each result file so memory stays flat however many inputs the run had."""
    storage = service.storage
    manifest = storage.get_json(bucket, manifest_key)
    totals = RunTotals()
    for status, files in manifest.get("ResultFiles", {}).items():
        for entry in files:
            chunks = storage.iter_chunks(manifest.get("DestinationBucket", bucket), entry["Key"])
            for execution in iter_json_values(chunks):
                totals.add(_batch_result_of(execution, status))
    return write_summary(service, bucket, run_id, totals, manifest.get("StartDate", ""))


def summarise_failed_run(service: Service, bucket: str, run_id: str, error: dict[str, Any]) -> dict[str, Any]:
    """The map failed as a whole (its listing was denied, too many batches failed): say so in the summary."""
    reason = {"error": str(error.get("Error", "")), "cause": str(error.get("Cause", ""))[:4096]}
    return write_summary(service, bucket, run_id, RunTotals(), "", error=reason)


def write_summary(
    service: Service,
    bucket: str,
    run_id: str,
    totals: RunTotals,
    started_at: str,
    error: dict[str, str] | None = None,
) -> dict[str, Any]:
    body = summary(run_id, bucket, service, totals.as_dict(), started_at, error)
    service.storage.put_json(bucket, summary_key(service, run_id), body)
    return body
