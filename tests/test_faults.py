"""Fault injection over real HTTP (a moto server on loopback): uploads, re-uploads of the same keys and
hostile files go through ``on_upload`` (SQS batches, out of order, duplicated) and ``bulk`` while S3
calls fail at random (500s, throttling, lost responses) and invocations are killed at random S3
calls. After the retries SQS and Step Functions would make, every key is checked: exactly one
record, describing the object as it is now. Seeded and bounded: the same run every time."""

from __future__ import annotations

import hashlib
import io
import random
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import boto3
import pytest
from PIL import Image

from handler import imaging
from handler.imaging import ImageError
from handler.pipeline import Service, process
from handler.sinks import RecordSlots
from handler.storage import Storage
from infra.local_s3 import LocalContext, embedded_s3, s3_notification, sqs_wrap
from tests.conftest import draw_seven, png_bytes
from tests.record_layout import assert_record_in_step
from tests.s3_semantics import Actor, Crash, Faults, Turnstile, behave_like_aws
from tests.test_hostile_inputs import scan_flood

pytestmark = pytest.mark.e2e
SEED = 20261125
STEPS = 160
KEYS = [f"input/chaos/{i:02d}.png" for i in range(24)] + ["input/chaos/" + "ü" * 500 + ".png"]
BUCKET = "chaos"


def bodies() -> dict[str, bytes]:
    liar = bytearray(png_bytes(Image.new("L", (64, 64), 200), format="JPEG"))
    frame = liar.index(b"\xff\xc0")
    liar[frame + 5 : frame + 9] = (3000).to_bytes(2, "big") * 2
    return {
        "seven": png_bytes(draw_seven()),
        "bold seven": png_bytes(draw_seven(150, stroke=26).convert("RGB"), format="JPEG"),
        "thin seven": png_bytes(draw_seven(300, stroke=6)),
        "garbage": b"\x89PNG\r\n\x1a\nnot really",
        "empty": b"",
        "text": b"BM is not a bitmap",
        "blank": png_bytes(Image.new("L", (120, 120), 230)),
        "scan flood": scan_flood(2000, 200),
        "liar": bytes(liar),
    }


def expected(body: bytes) -> str:
    """What the record must say for these bytes: an error code, or 'result'."""
    try:
        imaging.prepare(body, 40_000_000)
    except ImageError as exc:
        return str(exc.code)
    return "result"


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    with embedded_s3() as url:
        yield url


class Switch:
    """One set of faults per invocation, on the service's own client."""

    def __init__(self) -> None:
        self.current = Faults(random.Random(0))

    def attach(self, client: Any) -> None:
        client.meta.events.register("before-call.s3", lambda **kw: self.current._before(**kw))
        client.meta.events.register("after-call.s3", lambda **kw: self.current._after(**kw))


def test_chaos_ends_with_exactly_one_current_record_per_key(endpoint: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from handler import app

    rng = random.Random(SEED)
    uploader = boto3.client("s3")
    uploader.create_bucket(Bucket=BUCKET)
    monkeypatch.setattr(app, "settings", app.settings.__class__(bucket=BUCKET))
    app.service.cache_clear()
    storage = app.service().storage
    behave_like_aws(storage.s3)
    switch = Switch()
    switch.attach(storage.s3)
    kinds = bodies()
    outcome_of = {name: expected(body) for name, body in kinds.items()}
    assert outcome_of["scan flood"] == "TooLarge" and outcome_of["liar"] == "Corrupt"
    queue: list[dict[str, Any]] = []
    bulk_batches: list[dict[str, Any]] = []
    tally = {"crashes": 0, "uploads": 0, "deliveries": 0, "bulk": 0, "redelivered": 0, "concurrent": 0}
    classifier = app.service().classifier

    def upload(key: str, name: str) -> None:
        body = kinds[name]
        etag = uploader.put_object(Bucket=BUCKET, Key=key, Body=body)["ETag"].strip('"')
        notification = s3_notification(BUCKET, [(key, etag, len(body))])
        queue.extend([notification] * (2 if rng.random() < 0.15 else 1))  # at-least-once: duplicates happen
        tally["uploads"] += 1

    def invoke(function: Any, event: dict[str, Any], faulty: bool) -> Any:
        switch.current = Faults(
            random.Random(rng.random()),
            fail=rng.choice([0.05, 0.3, 0.6]) if faulty else 0.0,
            lose_response=0.05 if faulty else 0.0,
            crash=0.02 if faulty else 0.0,
        )
        try:
            return function(event, LocalContext())
        except Crash:
            tally["crashes"] += 1
            return None

    def deliver(faulty: bool) -> None:
        picked = [queue.pop(rng.randrange(len(queue))) for _ in range(min(len(queue), rng.randint(1, 5)))]
        event = sqs_wrap(picked)
        response = invoke(app.on_upload, event, faulty)
        tally["deliveries"] += 1
        if response is None:  # killed: no response, every message becomes visible again
            queue.extend(picked)
            tally["redelivered"] += len(picked)
            return
        failed = {item["itemIdentifier"] for item in response["batchItemFailures"]}
        for record, notification in zip(event["Records"], picked, strict=True):
            if record["messageId"] in failed:
                queue.append(notification)
                tally["redelivered"] += 1

    def concurrently() -> None:
        """A re-upload races the invocations handling that key: A holds the key's earlier event, U
        re-uploads it, B (started after U, as its event exists only then) holds the new event. Their
        S3 calls interleave as a seeded schedule says."""
        batches = [[queue.pop(rng.randrange(len(queue))) for _ in range(min(len(queue), 3))] for _ in range(2)]
        key = rng.choice([s.key for n in batches[0] for s in app.sources_from_s3_event(n)] or KEYS)
        name = rng.choice(list(kinds))

        def invocation(actor: str, batch: list[dict[str, Any]]) -> Any:
            client = boto3.client("s3")
            Faults(random.Random(rng.random()), fail=0.1, lose_response=0.05, crash=0.03).attach(client)
            settings = replace(
                app.settings, concurrency=1
            )  # one S3 call at a time per actor: the turnstile orders them
            service = Service(settings, Storage(behave_like_aws(turnstile.attach(client, actor))), classifier)
            return lambda: process([s for n in batch for s in app.sources_from_s3_event(n)], service)

        def reupload() -> None:
            turnstile.gate("U", "PutObject")
            before = len(queue)
            upload(key, name)
            batches[1].extend(queue[before:])  # the new version's event goes to B, running beside A
            del queue[before:]

        actors = [Actor("A", lambda: None), Actor("U", reupload), Actor("B", lambda: None, after="U")]
        turnstile = Turnstile(actors, "A" + "".join(rng.choice("AABBU") for _ in range(80)))
        actors[0].run, actors[2].run = invocation("A", batches[0]), invocation("B", batches[1])
        turnstile.run()
        for actor, batch in ((actors[0], batches[0]), (actors[2], batches[1])):
            if isinstance(actor.error, Crash):
                tally["crashes"] += 1
                queue.extend(batch)
                continue
            assert actor.error is None, actor.error
            retry = {o.source.key for o in actor.result if o.status in ("failed", "deferred")}
            queue.extend(n for n in batch if {s.key for s in app.sources_from_s3_event(n)} & retry)
        tally["concurrent"] += 1

    def bulk(faulty: bool, batch: dict[str, Any] | None = None) -> None:
        if batch is None:
            listed = uploader.list_objects_v2(Bucket=BUCKET, Prefix="input/").get("Contents", [])
            chosen = rng.sample(listed, k=min(len(listed), rng.randint(1, 8)))
            items = [
                {"Etag": o["ETag"], "Key": o["Key"], "LastModified": 1764072000, "Size": o["Size"]} for o in chosen
            ]
            batch = {"Items": items, "BatchInput": {"bucket": BUCKET}}
        result = invoke(app.bulk, batch, faulty)
        tally["bulk"] += 1
        if result is None or result["counts"]["failed"] or result["counts"]["deferred"]:
            bulk_batches.append(batch)  # Step Functions retries a failed child

    for key in KEYS:
        upload(key, rng.choice(list(kinds)))
    for _ in range(STEPS):
        roll = rng.random()
        if roll < 0.25:
            upload(rng.choice(KEYS), rng.choice(list(kinds)))
        elif roll < 0.55 and queue:
            deliver(faulty=True)
        elif roll < 0.8 and len(queue) >= 2:
            concurrently()
        else:
            bulk(faulty=True)
    while queue:  # what SQS would still redeliver (and a redrive from the DLQ), with S3 healthy again
        deliver(faulty=False)
    while bulk_batches:
        bulk(faulty=False, batch=bulk_batches.pop())
    assert tally["crashes"] >= 5 and tally["redelivered"] >= 10 and tally["concurrent"] >= 10, tally  # truly hostile

    listed = {
        prefix: {
            o["Key"]
            for page in uploader.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
            for o in page.get("Contents", [])
        }
        for prefix in ("output/", "errors/")
    }
    assert len(listed["output/"]) == len(KEYS), "a record without an input, or an input with two"
    by_etag = {hashlib.md5(body, usedforsecurity=False).hexdigest(): name for name, body in kinds.items()}
    errors = set()
    for key in KEYS:
        record = assert_record_in_step(uploader, BUCKET, key)
        want = outcome_of[by_etag[record["source"]["etag"]]]
        got = record["error"]["code"] if "error" in record else "result"
        assert got == want, (key, by_etag[record["source"]["etag"]], got)
        if "error" in record:
            errors.add(RecordSlots.of(key, "input/", "output/", "errors/").mirror)
    assert listed["errors/"] == errors, "an errors/ mirror for an input whose record is not an error"


def test_the_chaos_bodies_are_what_they_claim() -> None:
    """Guard for the test above: its hostile files really are hostile, its images really are read."""
    kinds = bodies()
    assert {name: expected(body) for name, body in kinds.items()} == {
        "seven": "result",
        "bold seven": "result",
        "thin seven": "result",
        "garbage": "Corrupt",
        "empty": "Empty",
        "text": "Unsupported",
        "blank": "NoInk",
        "scan flood": "TooLarge",
        "liar": "Corrupt",
    }
    assert Image.open(io.BytesIO(kinds["liar"])).size == (3000, 3000)
