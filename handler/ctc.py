"""CTC maths over a line reader's output: per-column probabilities over the classes and a blank (last).

Shared by serving (:mod:`handler.recognition` reads touching characters whole) and training
(``training.line_reader`` scores its candidates the same way).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


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
