"""Where the classifier's answer becomes a reading: probabilities -> a typed :class:`Reading`, restricted to
the characters a field may hold (``--allow``, ``x-amz-meta-allow``, ``ALLOW``) and renormalised over them.

EMNIST Balanced merges the lowercase letters that look like their capitals (c i j k l m o p s u v w x y z)
into the capital's class, so allowing ``c`` allows the class ``C``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


class AllowError(ValueError):
    """The allowed characters name something the model cannot read."""


@dataclass(frozen=True)
class Alternative:
    label: str
    confidence: float


@dataclass(frozen=True)
class Reading:
    """One character: the best labels in order, and the characters it was restricted to (None: any)."""

    top: tuple[Alternative, ...]
    allowed: str | None = None
    review: bool | None = None  # below the model's calibrated threshold: a person should check it

    @property
    def label(self) -> str:
        return self.top[0].label

    @property
    def confidence(self) -> float:
        return self.top[0].confidence


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


def read(
    probabilities: np.ndarray,
    classes: str,
    *,
    top_k: int = 5,
    allow: str | None = None,
    review_below: float | None = None,
) -> Reading:
    """The best ``top_k`` labels; with ``allow``, only those classes, their probabilities summing to 1;
    with ``review_below`` (the model's calibrated threshold), whether a person should check the label."""
    if allow:
        mask = allowed_mask(classes, allow)
        probabilities = np.where(mask, probabilities, 0.0)
        probabilities = probabilities / max(float(probabilities.sum()), 1e-30)
        top_k = min(top_k, int(mask.sum()))  # never list a character that is not allowed
    order = np.argsort(probabilities, kind="stable")[::-1][:top_k]
    top = tuple(Alternative(classes[i], round(float(probabilities[i]), 4)) for i in order)
    review = None if review_below is None else bool(probabilities[order[0]] < review_below)
    return Reading(top, allow or None, review)
