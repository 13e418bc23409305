"""Two versions of one key (or a bulk run and an upload) race; whatever the interleaving, one record
remains and it describes the object as it is now. Interleavings are chosen by a schedule (seeded),
not by the thread scheduler, so every run of a seed is the same run."""

from __future__ import annotations

import hashlib
import random
from dataclasses import replace
from typing import Any

import boto3
import pytest

from handler.config import Settings
from handler.pipeline import Service, process
from handler.records import Source
from handler.storage import Storage
from tests.conftest import BUCKET, draw_seven, png_bytes
from tests.record_layout import assert_record_in_step
from tests.s3_semantics import Actor, Turnstile, behave_like_aws

KEY = "input/race.png"
BODIES = {
    "garbage": b"\x89PNG\r\n\x1a\nnot really a png",
    "empty": b"",
    "seven": png_bytes(draw_seven()),
    "bold": png_bytes(draw_seven(120, stroke=30)),
}
NAMED = {
    "the later version finishes first": "AU" + "B" * 30 + "A" * 30,
    "the two alternate call by call": "AUB" + "AB" * 30,
    "earlier version finishes first": "A" * 30 + "U" + "B" * 30,
}
SEEDS = range(24)


def etag_of(body: bytes) -> str:
    return hashlib.md5(body, usedforsecurity=False).hexdigest()


def run_race(classifier: Any, first: str, second: str, schedule: str, *, bulk: bool = False) -> None:
    s3 = boto3.client("s3")
    s3.put_object(Bucket=BUCKET, Key=KEY, Body=BODIES[first])
    settings = replace(Settings(bucket=BUCKET), concurrency=1)

    def service(actor: str) -> Service:
        client = behave_like_aws(turnstile.attach(boto3.client("s3"), actor))
        return Service(settings, Storage(client), classifier)

    def old_version() -> Any:
        source = Source(BUCKET, KEY, etag_of(BODIES[first]), len(BODIES[first]))
        return process([source], services["A"], skip_existing=bulk)

    def upload() -> Any:
        return services["U"].storage.s3.put_object(Bucket=BUCKET, Key=KEY, Body=BODIES[second])

    def new_version() -> Any:
        return process([Source(BUCKET, KEY, etag_of(BODIES[second]), len(BODIES[second]))], services["B"])

    actors = [Actor("A", old_version), Actor("U", upload), Actor("B", new_version, after="U")]
    turnstile = Turnstile(actors, schedule)
    services = {actor.name: service(actor.name) for actor in actors}
    turnstile.run()
    for actor in actors:
        assert actor.error is None, (actor.name, actor.error, turnstile.trace)
        if actor.name != "U":
            assert [o.status for o in actor.result] != ["failed"], (actor.name, actor.result, turnstile.trace)
    assert_one_current_record(s3, turnstile.trace)


def assert_one_current_record(s3: Any, trace: list[str]) -> None:
    record = assert_record_in_step(s3, BUCKET, KEY, context=trace)
    current = s3.head_object(Bucket=BUCKET, Key=KEY)["ETag"].strip('"')
    errors = {etag_of(BODIES[name]): name for name in ("garbage", "empty")}
    assert ("error" in record) == (current in errors), trace
    if current in errors:  # an error replacing another error: the record and its mirror say the new one
        assert record["error"]["code"] == {"garbage": "Corrupt", "empty": "Empty"}[errors[current]], trace


PAIRS = [("garbage", "seven"), ("seven", "garbage"), ("seven", "bold"), ("garbage", "empty")]


@pytest.mark.parametrize(("first", "second"), PAIRS)
@pytest.mark.parametrize("name", sorted(NAMED))
def test_named_interleavings_of_two_uploads_leave_one_current_record(
    s3: Any, classifier: Any, first: str, second: str, name: str
) -> None:
    run_race(classifier, first, second, NAMED[name])


@pytest.mark.parametrize(("first", "second"), PAIRS)
@pytest.mark.parametrize("seed", SEEDS)
def test_random_interleavings_of_two_uploads_leave_one_current_record(
    s3: Any, classifier: Any, first: str, second: str, seed: int
) -> None:
    rng = random.Random(seed)
    run_race(classifier, first, second, "A" + "".join(rng.choice("AUB") for _ in range(60)))  # A has read V1


@pytest.mark.parametrize(("first", "second"), PAIRS)
@pytest.mark.parametrize("seed", range(12))
def test_a_bulk_run_racing_an_upload_leaves_one_current_record(
    s3: Any, classifier: Any, first: str, second: str, seed: int
) -> None:
    rng = random.Random(1000 + seed)
    run_race(classifier, first, second, "AA" + "".join(rng.choice("AUB") for _ in range(60)), bulk=True)
