"""Decode and normalise on every vCPU: CPU-bound image work in worker processes, fed through pipes.

The normaliser holds the GIL for about half its time, so threads cannot use a second vCPU; processes
can. Lambda has no ``/dev/shm``, so ``multiprocessing.Pool`` and ``Queue`` do not work there: each
worker gets a ``Pipe``, as AWS suggests. The calling process works on a share too, so N vCPUs means
N - 1 workers. S3 I/O keeps its own threads (it releases the GIL).
"""

from __future__ import annotations

import atexit
import contextlib
import multiprocessing
from collections.abc import Sequence
from multiprocessing.connection import Connection

import numpy as np

from handler import imaging
from handler.imaging import ImageError

Prepared = np.ndarray | ImageError


def prepare_one(payload: bytes, max_pixels: int) -> Prepared:
    try:
        return imaging.prepare(payload, max_pixels)
    except ImageError as exc:
        return exc


def _serve(connection: Connection, inherited: list[Connection]) -> None:
    for other in inherited:  # the caller's ends, copied by fork: holding them would hide the caller's death
        other.close()
    while True:
        try:
            job = connection.recv()
        except (EOFError, OSError):  # the caller is gone (killed, or its invocation ended): so are we
            return
        if job is None:
            return
        payloads, max_pixels = job
        connection.send([prepare_one(payload, max_pixels) for payload in payloads])


class Workers:
    """``processes`` helpers plus the caller; started on first use, stopped at exit."""

    def __init__(self, processes: int) -> None:
        self.processes = processes
        self._pipes: list[Connection] = []

    def _start(self) -> None:
        context = multiprocessing.get_context("fork")  # no re-import: the helpers share the loaded code
        for _ in range(self.processes):
            mine, theirs = context.Pipe()
            context.Process(target=_serve, args=(theirs, [*self._pipes, mine]), daemon=True).start()
            theirs.close()
            self._pipes.append(mine)
        atexit.register(self.close)

    def prepare(self, payloads: Sequence[bytes], max_pixels: int) -> list[Prepared]:
        """Each payload decoded and normalised, in order, the work split evenly across processes."""
        if self.processes == 0 or len(payloads) < 2:
            return [prepare_one(payload, max_pixels) for payload in payloads]
        if not self._pipes:
            self._start()
        shares = np.array_split(np.arange(len(payloads)), self.processes + 1)
        sent = []
        for pipe, share in zip(self._pipes, shares[1:], strict=True):
            try:
                pipe.send(([payloads[i] for i in share], max_pixels))
                sent.append(True)
            except OSError:  # a helper died since the last batch
                sent.append(False)
        results = [prepare_one(payloads[i], max_pixels) for i in shares[0]]
        healthy = all(sent)
        for pipe, share, delivered in zip(self._pipes, shares[1:], sent, strict=True):
            try:
                if not delivered:
                    raise EOFError
                results.extend(pipe.recv())
            except (EOFError, OSError):  # it died (out of memory?): its share is done here, helpers restart next time
                results.extend(prepare_one(payloads[i], max_pixels) for i in share)
                healthy = False
        if not healthy:
            self.close()
        return results

    def close(self) -> None:
        for pipe in self._pipes:
            with contextlib.suppress(OSError):  # already gone
                pipe.send(None)
        self._pipes.clear()
