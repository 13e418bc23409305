"""Decode and normalise on every vCPU: CPU-bound image work in worker processes, fed through pipes.

The normaliser holds the GIL for about half its time, so threads cannot use a second vCPU; processes
can. Lambda has no ``/dev/shm``, so ``multiprocessing.Pool`` and ``Queue`` do not work there: each
worker gets a ``Pipe``, as AWS suggests. The calling process works on a share too, so N vCPUs means
N - 1 workers. S3 I/O keeps its own threads (it releases the GIL).
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import multiprocessing
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING

import numpy as np

from handler import imaging
from handler.imaging import ImageError
from handler.imaging.errors import unreadable

if TYPE_CHECKING:
    from handler.model import Classifier

LOGGER = logging.getLogger(__name__)

Prepared = imaging.Candidates | ImageError


@dataclass(frozen=True)
class Scores:
    """The model's answers for one page: a probability row per candidate glyph and, with a line reader, its
    per-column probabilities for each wide blob (None: the version has no line reader)."""

    glyphs: np.ndarray
    strips: np.ndarray | None = None


Predict = Callable[[Sequence[imaging.Candidates]], list[Scores]]


def scorer(classifier: Classifier) -> Predict:
    """Pages -> their :class:`Scores`: every glyph of every page in one batch, every strip in another."""

    def score(pages: Sequence[imaging.Candidates]) -> list[Scores]:
        if not pages:
            return []
        glyphs = classifier.predict(np.concatenate([page.glyphs for page in pages]))
        rows = np.split(glyphs, np.cumsum([len(page.glyphs) for page in pages])[:-1])
        counts = [len(page.strips) for page in pages]
        reader = classifier.line_reader
        if reader is None:
            return [Scores(glyph_rows) for glyph_rows in rows]
        frames = np.split(reader.predict(np.concatenate([page.strips for page in pages])), np.cumsum(counts)[:-1])
        return [Scores(glyph_rows, strip_frames) for glyph_rows, strip_frames in zip(rows, frames, strict=True)]

    return score


OWN_SHARE = 0.95  # the caller's share of the images, relative to a helper's: it also builds the records (cheap now)


def prepare_one(payload: bytes, max_pixels: int) -> Prepared:
    """One input's candidates, or the error its record will carry. A failure of our own code on one image
    is that image's error (``Unreadable``, logged), never its batch's: the same bytes would fail every retry."""
    try:
        return imaging.candidates(payload, max_pixels)
    except ImageError as exc:
        return exc
    except MemoryError:  # the function's limit, not this image's fault: the batch is retried
        raise
    except Exception as exc:  # a bug, confined to the input that triggers it
        LOGGER.exception("reading an image failed: %s", type(exc).__name__)
        return unreadable(exc)


def readable_of(results: Sequence[Prepared]) -> list[int]:
    return [i for i, result in enumerate(results) if isinstance(result, imaging.Candidates)]


def _serve(connection: Connection, inherited: list[Connection], predict: Predict | None) -> None:
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
        results = [prepare_one(payload, max_pixels) for payload in payloads]
        readable = readable_of(results)
        scores = predict([results[i] for i in readable]) if predict and readable else None  # type: ignore[misc]
        connection.send((results, scores))


class Workers:
    """``processes`` helpers plus the caller; started on first use, stopped at exit. Given ``predict``
    (the loaded model, inherited by fork), helpers also run the model on their share, so nothing but
    building the records is left to the caller."""

    def __init__(self, processes: int, predict: Predict | None = None) -> None:
        self.processes = processes
        self.predict = predict
        self._pipes: list[Connection] = []

    def _start(self) -> None:
        context = multiprocessing.get_context("fork")  # no re-import: the helpers share the loaded code
        for _ in range(self.processes):
            mine, theirs = context.Pipe()
            helper = context.Process(target=_serve, args=(theirs, [*self._pipes, mine], self.predict), daemon=True)
            helper.start()
            theirs.close()
            self._pipes.append(mine)
        atexit.register(self.close)

    def prepare(self, payloads: Sequence[bytes], max_pixels: int) -> list[Prepared]:
        """Each payload decoded and normalised, in order, the work split across processes."""
        results: list[Prepared | None] = [None] * len(payloads)
        for indices, share, _ in self.shares(payloads, max_pixels):
            for index, result in zip(indices, share, strict=True):
                results[index] = result
        return results  # type: ignore[return-value]

    def shares(
        self, payloads: Sequence[bytes], max_pixels: int
    ) -> Iterator[tuple[list[int], list[Prepared], list[Scores] | None]]:
        """(indices, results, scores of the readable ones or None) for each process's share. The
        caller's own share comes first and is not predicted here: the caller runs the model on it while
        the helpers finish theirs."""
        if self.processes == 0 or len(payloads) < 2:
            yield list(range(len(payloads))), [prepare_one(payload, max_pixels) for payload in payloads], None
            return
        if not self._pipes:
            self._start()
        weights = np.array([OWN_SHARE] + [1.0] * self.processes)
        bounds = np.round(np.cumsum(weights) / weights.sum() * len(payloads)).astype(int)
        ranges = [list(range(start, stop)) for start, stop in zip([0, *bounds[:-1]], bounds, strict=True)]
        sent = []
        for pipe, indices in zip(self._pipes, ranges[1:], strict=True):
            try:
                pipe.send(([payloads[i] for i in indices], max_pixels))
                sent.append(True)
            except OSError:  # a helper died since the last batch
                sent.append(False)
        yield ranges[0], [prepare_one(payloads[i], max_pixels) for i in ranges[0]], None
        healthy = all(sent)
        for pipe, indices, delivered in zip(self._pipes, ranges[1:], sent, strict=True):
            try:
                if not delivered:
                    raise EOFError
                share, probabilities = pipe.recv()
            except (EOFError, OSError):  # it died (out of memory?): its share is done here, helpers restart next time
                share, probabilities = [prepare_one(payloads[i], max_pixels) for i in indices], None
                healthy = False
            yield indices, share, probabilities
        if not healthy:
            self.close()

    def close(self) -> None:
        for pipe in self._pipes:
            with contextlib.suppress(OSError):  # already gone
                pipe.send(None)
        self._pipes.clear()
