"""Where images meet the classifier's answers: probabilities -> typed readings.

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
import math
from dataclasses import dataclass

import numpy as np

from handler.imaging import Box, Candidates
from handler.imaging.segment import Piece, Wide
from handler.imaging.strip import FRAME, strip_columns
from handler.model import calibrate

CHARACTER_BONUS = 0.3  # log-odds credited per character: a plain product of probabilities favours merging
WHOLE_ODDS = 0.0  # the line reader's reading of a wide blob is kept when likelier than any single character ...
ALONE_ODDS = 3.0  # ... and 20 times likelier for a blob alone on its page: most such uploads are one wide letter
CONTEXT_MIN = 3  # characters on a line before the line says whether it is letters or digits
LINE_KINDS = {"letters": 0.25, "capitals": 0.25, "digits": 0.25, "mixed": 0.25}  # a word, a NAME, 1,234, A7X9
REVIEW_SEGMENTATION = 0.5  # when another count of characters is as likely, the whole reading asks for review


class AllowError(ValueError):
    """The allowed characters name something the model cannot read."""


@dataclass(frozen=True)
class Alternative:
    label: str
    confidence: float


@dataclass(frozen=True)
class Character:
    """One character: the best labels in order, where it is (input pixels), on which line, and whether a
    person should check it (below the model's calibrated threshold)."""

    top: tuple[Alternative, ...]
    box: Box | None = None
    line: int = 0
    review: bool | None = None

    @property
    def label(self) -> str:
        return self.top[0].label

    @property
    def confidence(self) -> float:
        return self.top[0].confidence


@dataclass(frozen=True)
class Reading:
    """What an image says: its characters line by line, the characters they were restricted to (None: any),
    how sure the split into characters is, and whether a person should check any of it."""

    characters: tuple[Character, ...]
    allowed: str | None = None
    segmentation: float = 1.0
    review: bool | None = None

    @property
    def text(self) -> str:
        lines: dict[int, str] = {}
        for character in self.characters:
            lines[character.line] = lines.get(character.line, "") + character.label
        return "\n".join(lines[line] for line in sorted(lines))

    @property
    def single(self) -> bool:
        return len(self.characters) == 1

    @property
    def top(self) -> tuple[Alternative, ...]:
        return self._only().top

    @property
    def label(self) -> str:
        return self._only().label

    @property
    def confidence(self) -> float:
        return self._only().confidence

    def _only(self) -> Character:
        if not self.single:
            raise ValueError(f"the reading holds {len(self.characters)} characters, not one: use text/characters")
        return self.characters[0]


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
    line: int,
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
    return Character(top, box, line, review)


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
        restrict(probabilities, classes, allow), classes, _top_k(classes, allow, top_k), review_below, None, 0
    )
    return Reading((character,), allow or None, 1.0, character.review)


@dataclass(frozen=True)
class LineCharacter:
    """One character on the line reader's best path: its class, the columns it spans (first, peak, last)
    and the class probabilities at its peak column (blank left out, summing to 1)."""

    index: int
    first: int
    peak: int
    last: int
    probabilities: np.ndarray


def allowed_columns(frames: np.ndarray, allowed: np.ndarray) -> np.ndarray:
    """The line reader's columns with the classes outside ``allowed`` taken out (CTC's blank stays)."""
    return frames * np.append(allowed, True)


def decode_line(frames: np.ndarray, allowed: np.ndarray | None = None) -> list[LineCharacter]:
    """CTC best path over (columns, classes + blank) probabilities: the likeliest class per column, repeats
    merged, blanks dropped. With ``allowed`` (a class mask), the other classes are taken out first."""
    if allowed is not None:
        frames = allowed_columns(frames, allowed)
    classes = frames.shape[1] - 1
    best = frames.argmax(axis=1)
    found: list[LineCharacter] = []
    column = 0
    while column < len(best):
        index = int(best[column])
        end = column
        while end + 1 < len(best) and best[end + 1] == index:
            end += 1
        if index != classes:
            peak = column + int(frames[column : end + 1, index].argmax())
            at_peak = frames[peak, :classes]
            found.append(LineCharacter(index, column, peak, end, at_peak / max(float(at_peak.sum()), 1e-30)))
        column = end + 1
    return found


def line_probability(frames: np.ndarray, labels: list[int]) -> float:
    """CTC's probability of the label sequence, summed over every alignment (the forward algorithm)."""
    blank = frames.shape[1] - 1
    extended = [blank]
    for index in labels:
        extended += [index, blank]
    emit = frames[:, extended].astype(np.float64)  # (columns, states)
    states = len(extended)
    skip = np.zeros(states, dtype=bool)  # a state reachable two back: a label unlike the one before it
    for state in range(2, states):
        skip[state] = extended[state] != blank and extended[state] != extended[state - 2]
    alpha = np.zeros(states)
    alpha[0] = emit[0, 0]
    if states > 1:
        alpha[1] = emit[0, 1]
    for column in range(1, len(frames)):
        moved = alpha.copy()
        moved[1:] += alpha[:-1]
        moved[2:] += np.where(skip[2:], alpha[:-2], 0.0)
        alpha = moved * emit[column]
    return float(alpha[-1] + (alpha[-2] if states > 1 else 0.0))


def one_character_probabilities(frames: np.ndarray) -> np.ndarray:
    """CTC's probability that the blob holds exactly one character, of each class (forward algorithm,
    every class at once)."""
    frames = frames.astype(np.float64)
    blank, labels = frames[:, -1], frames[:, :-1]
    before, inside, after = blank[0], labels[0].copy(), np.zeros(labels.shape[1])
    for column in range(1, len(frames)):
        before, inside, after = (
            before * blank[column],
            (before + inside) * labels[column],
            (inside + after) * blank[column],
        )
    return inside + after


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
    top_k = _top_k(classes, allow, top_k)
    top_probability = restricted.max(axis=1)
    characters: list[Character] = []
    segmentation = 1.0
    strip = 0
    for number, line in enumerate(found.segmentation.lines):
        options = [
            _Option(piece.first, piece.last, _piece_score(piece, float(top_probability[line.offset + index])), index)
            for index, piece in enumerate(line.pieces)
        ]
        for wide in line.wide:
            if strips is None or strip >= len(strips):
                break
            whole, odds = _read_whole(
                wide,
                strips[strip],
                found,
                classes=classes,
                allow=allow,
                temperature=strip_temperature,
            )
            strip += 1
            alone = len(found.segmentation.lines) == 1 and (wide.first, wide.last) == (0, line.atoms - 1)
            if odds > (ALONE_ODDS if alone else WHOLE_ODDS):  # touching characters: read whole, never cut
                options = [o for o in options if o.last < wide.first or o.first > wide.last]
                score = sum(math.log(max(float(p.max()), 1e-12)) + CHARACTER_BONUS for p, _ in whole)
                options.append(_Option(wide.first, wide.last, score, characters=whole))
        chosen, sure = _best_split(line.atoms, options)
        segmentation *= sure
        reads: list[tuple[np.ndarray, Box]] = []
        for option in chosen:
            if option.piece is None:
                reads.extend(option.characters)
            else:
                reads.append((restricted[line.offset + option.piece], found.box(line.pieces[option.piece])))
        in_context = _in_context([probabilities for probabilities, _ in reads], classes)
        characters += [
            _character(probabilities, classes, top_k, review_below, box, number, alone)
            for probabilities, (alone, box) in zip(in_context, reads, strict=True)
        ]
    review = None
    if review_below is not None:
        review = any(character.review for character in characters) or segmentation < REVIEW_SEGMENTATION
    return Reading(tuple(characters), allow or None, round(segmentation, 4), review)
