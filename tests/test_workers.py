"""Decoding on every vCPU: helper processes give the same answers as the caller, errors included."""

from __future__ import annotations

import os
import signal

import numpy as np

from handler.config import Settings, usable_cpus
from handler.imaging import ImageError
from handler.workers import Workers
from tests.conftest import draw_seven, png_bytes

PAYLOADS = [png_bytes(draw_seven(60 + 7 * i)) for i in range(9)] + [b"not an image", b""]


def test_helpers_return_what_the_caller_would_in_order() -> None:
    workers = Workers(2)
    try:
        parallel = workers.prepare(PAYLOADS, 40_000_000)
    finally:
        workers.close()
    serial = Workers(0).prepare(PAYLOADS, 40_000_000)
    for a, b in zip(parallel, serial, strict=True):
        if isinstance(b, ImageError):
            assert isinstance(a, ImageError) and a.code == b.code and str(a) == str(b)
        else:
            np.testing.assert_array_equal(a.glyphs, b.glyphs)
            assert a.segmentation.lines == b.segmentation.lines


def test_a_helper_that_dies_costs_its_share_nothing_more() -> None:
    workers = Workers(1)
    try:
        workers.prepare(PAYLOADS[:4], 40_000_000)  # starts the helper
        helper = [p for p in __import__("multiprocessing").active_children()][-1]
        os.kill(helper.pid, signal.SIGKILL)
        helper.join()
        results = workers.prepare(PAYLOADS, 40_000_000)
        assert len(results) == len(PAYLOADS) and isinstance(results[-1], ImageError)
        assert workers.prepare(PAYLOADS[:4], 40_000_000)[0].glyphs.shape == (1, 28, 28)  # restarted
    finally:
        workers.close()


def test_lambda_memory_decides_how_many_vcpus_are_worth_a_process() -> None:
    assert usable_cpus(1024) == 1 and usable_cpus(2048) == 1
    assert usable_cpus(10240) == min(6, usable_cpus(None))
    assert Settings(memory_mb=2048).cpu_workers == 1 and Settings(workers=3).cpu_workers == 3
