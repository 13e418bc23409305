"""Images in, readings out: decode -> find and segment the ink -> score every candidate in one model
batch -> the best reading of each input (:func:`label`), or the :class:`ImageError` that says why not.

One character: the best labels, restricted to the characters a field may hold (``--allow``,
``x-amz-meta-allow``, ``ALLOW``) and renormalised over them. A page: the segmenter's candidate pieces are
scored by the classifier, and the best way to split each line into characters is kept (segmentation by
recognition): the product of the characters' probabilities, times the segmenter's geometric prior (which
doubts pieces much wider than the line is tall, cuts through ink and bridges across gaps).

EMNIST Balanced merges the lowercase letters that look like their capitals (c i j k l m o p s u v w x y z)
into the capital's class, so allowing ``c`` allows the class ``C``.
"""

from __future__ import annotations

import itertools
import logging
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from handler.ctc import allowed_columns, decode_line, line_probability, one_character_probabilities
from handler.imaging import Candidates, ImageError
from handler.imaging.errors import ErrorCode, unreadable
from handler.imaging.segment import Line as SegmentedLine
from handler.imaging.segment import Piece, Wide
from handler.imaging.strip import FRAME, strip_columns
from handler.model import Classifier, calibrate
from handler.readings import Alternative, Box, Character, Line, Reading
from handler.records import ModelInfo, Source
from handler.workers import Prepared, Scores, Workers, prepare_one, readable_of, scorer

CHARACTER_BONUS = 0.3  # log-odds credited per character: a plain product of probabilities favours merging
WHOLE_ODDS = 0.0  # the line reader's reading of a wide blob is kept when likelier than any single character ...
ALONE_ODDS = 3.0  # ... and 20 times likelier for a blob alone on its page: most such uploads are one wide letter
CONTEXT_MIN = 3  # characters on a line before the line says whether it is letters or digits
LINE_KINDS = {"letters": 0.25, "capitals": 0.25, "digits": 0.25, "mixed": 0.25}  # a word, a NAME, 1,234, A7X9
REVIEW_SEGMENTATION = 0.5  # when another count of characters is as likely, the whole reading asks for review

LOGGER = logging.getLogger(__name__)


class AllowError(ValueError):
    """The allowed characters name something the model cannot read."""


def allowed_mask(classes: str, allow: str) -> np.ndarray:
    """Which of the model's classes the characters in ``allow`` (taken literally) may be."""
    mask = np.zeros(len(classes), dtype=bool)
    unknown = []
    for char in dict.fromkeys(allow):
        if char in classes:
            mask[classes.index(char)] = True
        elif char.upper() in classes and char.islower():
            mask[classes.index(char.upper())] = True
        else:
            unknown.append(char)
    if unknown or not mask.any():
        raise AllowError(f"allowed characters the model cannot read: {''.join(unknown) or repr(allow)}")
    return mask


def restrict(probabilities: np.ndarray, classes: str, allow: str | None) -> np.ndarray:
    """(..., classes) probabilities over the allowed classes only, summing to 1."""
    if not allow:
        return probabilities
    kept = np.where(allowed_mask(classes, allow), probabilities, 0.0)
    return kept / np.maximum(kept.sum(axis=-1, keepdims=True), 1e-30)


def _top_k(classes: str, allow: str | None, top_k: int) -> int:
    """Never list a character that is not allowed."""
    return min(top_k, int(allowed_mask(classes, allow).sum())) if allow else top_k


def _character(
    probabilities: np.ndarray,
    classes: str,
    top_k: int,
    review_below: float | None,
    box: Box | None,
    alone: np.ndarray | None = None,
) -> Character:
    """With ``alone`` (the character's probabilities before its line was taken into account), the label
    needs no review only if the character alone is sure of it too: the threshold was fitted on single
    characters, and a line's kind may be wrong (a digit among letters in a code)."""
    order = np.argsort(probabilities, kind="stable")[::-1][:top_k]
    top = tuple(Alternative(classes[i], round(float(probabilities[i]), 4)) for i in order)
    review = None
    if review_below is not None:
        sure = min(float(probabilities[order[0]]), float((probabilities if alone is None else alone)[order[0]]))
        review = sure < review_below
    return Character(top, box, review)


def read(
    probabilities: np.ndarray,
    classes: str,
    *,
    top_k: int = 5,
    allow: str | None = None,
    review_below: float | None = None,
) -> Reading:
    """One character: the best ``top_k`` labels; with ``allow``, only those classes, their probabilities
    summing to 1; with ``review_below`` (the model's calibrated threshold), whether a person should check it."""
    character = _character(
        restrict(probabilities, classes, allow), classes, _top_k(classes, allow, top_k), review_below, None
    )
    return Reading((Line((character,)),), allow or None, 1.0, character.review)


def _piece_score(piece: Piece, best: float) -> float:
    """log P(label), less the geometry's doubt that this piece is one character."""
    return math.log(max(best, 1e-12)) - piece.doubt + CHARACTER_BONUS


@dataclass(frozen=True)
class _Option:
    """A way to read atoms ``first``..``last``: one candidate piece (``piece``), or a wide blob read whole
    by the line reader (``characters``)."""

    first: int
    last: int
    score: float
    piece: int | None = None
    characters: tuple[tuple[np.ndarray, Box], ...] = ()  # (probabilities, box) of each, read whole

    @property
    def count(self) -> int:
        return len(self.characters) if self.piece is None else 1


def _best_split(atoms: int, options: list[_Option]) -> tuple[list[_Option], float]:
    """The options that tile the line's atoms best, and the probability that the line holds that many
    characters (a softmax over the best split for each count)."""
    most = sum(max(option.count, 1) for option in options) + 1
    ending: list[list[int]] = [[] for _ in range(atoms + 1)]
    for index, option in enumerate(options):
        ending[option.last + 1].append(index)
    best = np.full((atoms + 1, most + 1), -np.inf)  # best[end atom][number of characters]
    back = np.full((atoms + 1, most + 1), -1, dtype=np.int64)
    best[0, 0] = 0.0
    for end in range(1, atoms + 1):
        for index in ending[end]:
            option = options[index]
            count = option.count
            candidate = best[option.first, : most + 1 - count] + option.score
            better = candidate > best[end, count:]
            best[end, count:][better] = candidate[better]
            back[end, count:][better] = index
    totals = best[atoms]
    count = int(np.argmax(totals))
    finite = totals[np.isfinite(totals)]
    sure = float(1.0 / np.exp(finite - totals[count]).sum())
    chosen, end, remaining = [], atoms, count
    while end > 0:
        option = options[int(back[end, remaining])]
        chosen.append(option)
        end, remaining = option.first, remaining - option.count
    return chosen[::-1], sure


def _in_context(rows: list[np.ndarray], classes: str) -> list[np.ndarray]:
    """A line's characters read together: most lines are all letters (a word), all capitals (a name on a
    form) or all digits (an amount), so an ambiguous ``0``/``O``, ``1``/``I``, ``5``/``S`` or ``f``/``F`` is
    read as the kind its line is made of. The classifier's probabilities assume every class equally likely;
    a line is one of four kinds (``LINE_KINDS``, equally likely beforehand), each with its class prior, and
    each character's probabilities are averaged over the kinds, weighed by how well each kind explains the
    whole line (Bayes). A mixed line (``A7X9``) is left as it was; lines of fewer than ``CONTEXT_MIN``
    characters too."""
    if len(rows) < CONTEXT_MIN:
        return rows
    digit = np.array([label.isdigit() for label in classes])
    capital = np.array([label.isupper() for label in classes])
    kinds = {"letters": ~digit, "capitals": capital, "digits": digit, "mixed": np.ones_like(digit)}
    stacked = np.stack(rows).astype(np.float64)
    log_evidence, posteriors = [], []
    for name, members in kinds.items():
        scale = len(classes) / members.sum()  # the kind's class prior over the classifier's uniform one
        mass = stacked[:, members].sum(axis=1) * scale
        log_evidence.append(math.log(LINE_KINDS[name]) + float(np.log(np.maximum(mass, 1e-300)).sum()))
        kept = np.where(members, stacked, 0.0)
        posteriors.append(kept / np.maximum(kept.sum(axis=1, keepdims=True), 1e-300))
    weights = np.exp(np.array(log_evidence) - max(log_evidence))
    weights /= weights.sum()
    mixed = sum(w * posterior for w, posterior in zip(weights, posteriors, strict=True))
    return [row.astype(np.float32) for row in mixed]


def _read_whole(
    wide: Wide,
    frames: np.ndarray,
    found: Candidates,
    *,
    classes: str,
    allow: str | None,
    temperature: float,
) -> tuple[tuple[tuple[np.ndarray, Box], ...], float]:
    """A wide blob as the line reader reads it: its characters' calibrated probabilities, each boxed by the
    columns between its neighbours' (the reader's alignment); and the reader's log-odds of that reading
    against the likeliest single character."""
    if allow:
        frames = allowed_columns(frames, allowed_mask(classes, allow))
    path = decode_line(frames)
    if len(path) < 2:
        return (), -math.inf
    one = float(one_character_probabilities(frames).max())
    odds = math.log(max(line_probability(frames, [c.index for c in path]), 1e-300)) - math.log(max(one, 1e-300))
    columns = strip_columns(wide.box)
    to_blob = wide.box.width / columns  # blob pixels per strip column
    edges = [0]
    for before, after in itertools.pairwise(path):
        middle = (before.last + 1 + after.first) / 2 * FRAME
        edges.append(round(min(middle, columns) * to_blob))
    edges.append(wide.box.width)
    characters = []
    for character, left, right in zip(path, edges, edges[1:], strict=False):
        probabilities = restrict(calibrate(character.probabilities, temperature), classes, allow)
        box = found.box(wide.column_box(left, max(left, right - 1)))
        characters.append((probabilities, box))
    return tuple(characters), odds


@dataclass(frozen=True)
class _Page:
    """What every line of one page is read with."""

    found: Candidates
    restricted: np.ndarray  # one row per candidate piece, over the allowed classes only
    classes: str
    allow: str | None
    top_k: int
    review_below: float | None
    strip_temperature: float


def _options(page: _Page, line: SegmentedLine, strips: Iterator[np.ndarray]) -> list[_Option]:
    """Every way to read part of a line: each candidate piece, and each wide blob that the line reader
    (``strips``: its per-column probabilities, one per wide blob in page order) reads as touching characters."""
    top_probability = page.restricted[line.offset : line.offset + len(line.pieces)].max(axis=1)
    options = [
        _Option(piece.first, piece.last, _piece_score(piece, float(top_probability[index])), index)
        for index, piece in enumerate(line.pieces)
    ]
    for wide in line.wide:
        frames = next(strips, None)
        if frames is None:
            break
        whole, odds = _read_whole(
            wide, frames, page.found, classes=page.classes, allow=page.allow, temperature=page.strip_temperature
        )
        alone = len(page.found.segmentation.lines) == 1 and (wide.first, wide.last) == (0, line.atoms - 1)
        if odds > (ALONE_ODDS if alone else WHOLE_ODDS):  # touching characters: read whole, never cut
            options = [o for o in options if o.last < wide.first or o.first > wide.last]
            score = sum(math.log(max(float(p.max()), 1e-12)) + CHARACTER_BONUS for p, _ in whole)
            options.append(_Option(wide.first, wide.last, score, characters=whole))
    return options


def _read_line(page: _Page, line: SegmentedLine, strips: Iterator[np.ndarray]) -> tuple[Line, float]:
    """One line's best reading, and how sure its count of characters is."""
    chosen, sure = _best_split(line.atoms, _options(page, line, strips))
    reads: list[tuple[np.ndarray, Box]] = []
    for option in chosen:
        if option.piece is None:
            reads.extend(option.characters)
        else:
            reads.append((page.restricted[line.offset + option.piece], page.found.box(line.pieces[option.piece])))
    in_context = _in_context([probabilities for probabilities, _ in reads], page.classes)
    characters = tuple(
        _character(probabilities, page.classes, page.top_k, page.review_below, box, alone)
        for probabilities, (alone, box) in zip(in_context, reads, strict=True)
    )
    return Line(characters), sure


def read_page(
    found: Candidates,
    probabilities: np.ndarray,
    classes: str,
    *,
    strips: np.ndarray | None = None,
    strip_temperature: float = 1.0,
    top_k: int = 5,
    allow: str | None = None,
    review_below: float | None = None,
) -> Reading:
    """A page's candidates and their probabilities (one row per piece) -> the best :class:`Reading`.

    With the line reader's ``strips`` (per-column probabilities, one per wide blob), a wide blob that it
    reads as two or more characters is read its way: touching characters are read whole, not cut."""
    restricted = restrict(probabilities, classes, allow)
    page = _Page(found, restricted, classes, allow, _top_k(classes, allow, top_k), review_below, strip_temperature)
    remaining = iter(() if strips is None else strips)
    lines: list[Line] = []
    segmentation = 1.0
    for line in found.segmentation.lines:
        read_line, sure = _read_line(page, line, remaining)
        lines.append(read_line)
        segmentation *= sure
    review = None
    if review_below is not None:
        flagged = any(character.review for line in lines for character in line.characters)
        review = flagged or segmentation < REVIEW_SEGMENTATION
    return Reading(tuple(lines), allow or None, round(segmentation, 4), review)


class Deadline:
    """Time left in this invocation (Lambda's ``get_remaining_time_in_millis``), and whether one more step fits.

    A step fits if, after the longest step seen so far, ``reserve`` seconds remain to write records
    and answer. What does not fit is handed back as ``deferred`` for a retry, never cut off mid-write.
    """

    def __init__(self, remaining_ms: Callable[[], int], reserve: float = 5.0) -> None:
        self.remaining_ms = remaining_ms
        self.reserve = reserve
        self.longest = 0.0

    def allows(self) -> bool:
        return self.remaining_ms() / 1000 > self.reserve + self.longest

    def took(self, seconds: float) -> None:
        self.longest = max(self.longest, seconds)


Outcome = Reading | ImageError | None
"""What :func:`label` gives each input: its reading, why it cannot be read, or None (deferred: no time)."""


def model_info(classifier: Classifier) -> ModelInfo:
    return ModelInfo(classifier.manifest.version, classifier.manifest.runtime_sha256)


def label(
    items: Sequence[tuple[Source, bytes | ImageError]],
    classifier: Classifier,
    max_pixels: int,
    top_k: int = 5,
    *,
    deadline: Deadline | None = None,
    workers: Workers | None = None,
    allow: str | Sequence[str | None] | None = None,
) -> list[Outcome]:
    """A :class:`Reading` or an :class:`ImageError` per item, in order; every readable image is predicted
    in a single batch. Items that are already an error (the input is gone, too large) stay that error.

    ``allow`` restricts answers to those characters: one string for every item, or one per item.
    With ``workers``, decoding and normalising run on every vCPU. With a ``deadline`` (and no workers),
    an image whose decoding no longer fits gets None (deferred) instead of a reading.
    """
    payloads = [payload for _, payload in items]
    pages, scores = _prepare_and_score(payloads, classifier, max_pixels, deadline, workers)
    allows = [allow] * len(items) if allow is None or isinstance(allow, str) else list(allow)
    read: list[Outcome] = []
    for index, ((source, _), page) in enumerate(zip(items, pages, strict=True)):
        if isinstance(page, Candidates):
            read.append(_read_scored(source.key, page, scores[index], classifier, top_k, allows[index]))
        else:
            read.append(page)
    return read


def _prepare_and_score(
    payloads: Sequence[bytes | ImageError],
    classifier: Classifier,
    max_pixels: int,
    deadline: Deadline | None,
    workers: Workers | None,
) -> tuple[list[Prepared | None], dict[int, Scores]]:
    """Each payload's candidates (or its error; None: deferred) and the model's scores of the readable ones."""
    prepared: list[Prepared | None] = [p if isinstance(p, ImageError) else None for p in payloads]
    todo = [i for i, payload in enumerate(payloads) if not isinstance(payload, ImageError)]
    scores: dict[int, Scores] = {}
    score = scorer(classifier)

    def predict(indices: list[int]) -> None:
        readable = [i for i in indices if isinstance(prepared[i], Candidates)]
        scores.update(zip(readable, score([prepared[i] for i in readable]), strict=True))  # type: ignore[misc]

    started = time.perf_counter()
    if workers and workers.processes and len(todo) > 1:
        for positions, share, predicted in workers.shares([payloads[i] for i in todo], max_pixels):  # type: ignore[misc]
            indices = [todo[position] for position in positions]
            for index, result in zip(indices, share, strict=True):
                prepared[index] = result
            if predicted is None:
                predict(indices)  # the caller's own share, while the helpers finish theirs
            else:
                scores.update(zip([indices[i] for i in readable_of(share)], predicted, strict=True))
        if deadline:
            deadline.took(time.perf_counter() - started)
        return prepared, scores
    for i in todo:
        if deadline and not deadline.allows():
            continue
        started = time.perf_counter()
        prepared[i] = prepare_one(payloads[i], max_pixels)  # type: ignore[arg-type]
        if deadline:
            deadline.took(time.perf_counter() - started)
    predict(todo)
    return prepared, scores


def _read_scored(
    name: str, page: Candidates, scores: Scores, classifier: Classifier, top_k: int, allow: str | None
) -> Reading | ImageError:
    """One scored page's reading. A bug on this input's reading is its own error, not its batch's."""
    try:
        return read_page(
            page,
            scores.glyphs,
            classifier.classes,
            strips=scores.strips,
            strip_temperature=classifier.line_reader.temperature if classifier.line_reader else 1.0,
            top_k=top_k,
            allow=allow,
            review_below=classifier.manifest.review_below,
        )
    except AllowError as exc:
        return ImageError(ErrorCode.UNSUPPORTED, str(exc))
    except MemoryError:
        raise
    except Exception as exc:
        LOGGER.exception("reading %s failed", name)
        return unreadable(exc)
