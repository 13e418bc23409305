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

import math
from dataclasses import dataclass

import numpy as np

from handler.imaging import Box, Candidates
from handler.imaging.segment import Line, Piece

CHARACTER_BONUS = 0.3  # log-odds credited per character: a plain product of probabilities favours merging
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
    probabilities: np.ndarray, classes: str, top_k: int, review_below: float | None, box: Box | None, line: int
) -> Character:
    order = np.argsort(probabilities, kind="stable")[::-1][:top_k]
    top = tuple(Alternative(classes[i], round(float(probabilities[i]), 4)) for i in order)
    review = None if review_below is None else bool(probabilities[order[0]] < review_below)
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


def _piece_score(piece: Piece, best: float) -> float:
    """log P(label), less the geometry's doubt that this piece is one character."""
    return math.log(max(best, 1e-12)) - piece.doubt + CHARACTER_BONUS


def _best_split(line: Line, scores: list[float]) -> tuple[list[int], float]:
    """The pieces (indices into ``line.pieces``) that tile the line best, and the probability that the line
    holds that many characters (a softmax over the best split for each count)."""
    atoms = line.atoms
    ending: list[list[int]] = [[] for _ in range(atoms + 1)]
    for index, piece in enumerate(line.pieces):
        ending[piece.last + 1].append(index)
    best = np.full((atoms + 1, atoms + 1), -np.inf)  # best[end atom][number of characters]
    back = np.full((atoms + 1, atoms + 1), -1, dtype=np.int64)
    best[0, 0] = 0.0
    for end in range(1, atoms + 1):
        for index in ending[end]:
            start = line.pieces[index].first
            candidate = best[start, :-1] + scores[index]
            better = candidate > best[end, 1:]
            best[end, 1:][better] = candidate[better]
            back[end, 1:][better] = index
    totals = best[atoms]
    count = int(np.argmax(totals))
    finite = totals[np.isfinite(totals)]
    sure = float(1.0 / np.exp(finite - totals[count]).sum())
    chosen, end, remaining = [], atoms, count
    while end > 0:
        index = int(back[end, remaining])
        chosen.append(index)
        end, remaining = line.pieces[index].first, remaining - 1
    return chosen[::-1], sure


def read_page(
    found: Candidates,
    probabilities: np.ndarray,
    classes: str,
    *,
    top_k: int = 5,
    allow: str | None = None,
    review_below: float | None = None,
) -> Reading:
    """A page's candidates and their probabilities (one row per piece) -> the best :class:`Reading`."""
    restricted = restrict(probabilities, classes, allow)
    top_k = _top_k(classes, allow, top_k)
    top_probability = restricted.max(axis=1)
    characters: list[Character] = []
    segmentation = 1.0
    for number, line in enumerate(found.segmentation.lines):
        rows = range(line.offset, line.offset + len(line.pieces))
        scores = [
            _piece_score(piece, float(top_probability[row])) for piece, row in zip(line.pieces, rows, strict=True)
        ]
        chosen, sure = _best_split(line, scores)
        segmentation *= sure
        for index in chosen:
            piece = line.pieces[index]
            characters.append(
                _character(restricted[line.offset + index], classes, top_k, review_below, found.box(piece), number)
            )
    review = None
    if review_below is not None:
        review = any(character.review for character in characters) or segmentation < REVIEW_SEGMENTATION
    return Reading(tuple(characters), allow or None, round(segmentation, 4), review)
