"""A batch's memory does not grow with its length: a fetched body must not outlive its chunk (the chunk
being read and the next one being fetched are what is held), however many inputs the batch has."""

from __future__ import annotations

import os
import tracemalloc
from dataclasses import replace
from typing import Any

from handler.config import Settings
from handler.pipeline import Service, process
from handler.records import Source
from handler.storage import Fetched

MB = 1 << 20


class FreshBodies:
    """Storage whose every fetch allocates a new 1 MB body (not an image: each input reads as an error)."""

    def fetch(self, source: Source, max_bytes: int) -> Fetched:
        return Fetched(replace(source, etag="e", size=MB), os.urandom(MB))

    def put_record(self, *args: Any, **kwargs: Any) -> str:
        return "etag"

    def head_record(self, *args: Any, **kwargs: Any) -> None:
        return None


def test_a_batch_holds_two_chunks_of_bodies_not_all_of_them(classifier: Any) -> None:
    settings = replace(Settings(), chunk_items=2, concurrency=4, workers=1)
    service = Service(settings, FreshBodies(), classifier)  # type: ignore[arg-type]
    sources = [Source("bucket", f"input/{i}.bin", None, MB) for i in range(48)]
    process(sources[:2], service)  # threads and imports warmed outside the measurement
    tracemalloc.start()
    outcomes = process(sources, service)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert [o.status for o in outcomes] == ["error"] * 48
    assert peak < 24 * MB, f"{peak / MB:.1f} MB held for 48 x 1 MB inputs in chunks of 2"
