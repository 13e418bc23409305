"""What an image says, as typed values: the boundary between recognition and everything that consumes it.

Recognition (:mod:`handler.recognition`) returns a :class:`Reading`; records (:mod:`handler.records`)
serialise one; review and corrections read them back. A reading holds lines, a line holds characters, a
character holds its alternatives (best first) and a :class:`Box` in the input's upright pixels.
Nothing here knows about models, images or S3.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Box:
    """A rectangle in pixels: ``left``/``top`` inclusive, ``width``/``height`` its size."""

    left: int
    top: int
    width: int
    height: int

    def scaled(self, sx: float, sy: float) -> Box:
        left, top = math.floor(self.left * sx), math.floor(self.top * sy)
        right, bottom = math.ceil((self.left + self.width) * sx), math.ceil((self.top + self.height) * sy)
        return Box(left, top, max(1, right - left), max(1, bottom - top))


@dataclass(frozen=True)
class Alternative:
    label: str
    confidence: float


@dataclass(frozen=True)
class Character:
    """One character: the best labels in order, where it is, and whether a person should check it (below the
    model's calibrated threshold; None when the model is not calibrated)."""

    top: tuple[Alternative, ...]
    box: Box | None = None
    review: bool | None = None

    @property
    def label(self) -> str:
        return self.top[0].label

    @property
    def confidence(self) -> float:
        return self.top[0].confidence


@dataclass(frozen=True)
class Line:
    """A line of characters, left to right."""

    characters: tuple[Character, ...]

    @property
    def text(self) -> str:
        return "".join(character.label for character in self.characters)


@dataclass(frozen=True)
class Reading:
    """What an image says: its lines top to bottom, the characters they were restricted to (None: any), how
    sure the split into characters is, and whether a person should check any of it."""

    lines: tuple[Line, ...]
    allowed: str | None = None
    segmentation: float = 1.0
    review: bool | None = None

    @property
    def characters(self) -> tuple[Character, ...]:
        return tuple(character for line in self.lines for character in line.characters)

    @property
    def text(self) -> str:
        return "\n".join(line.text for line in self.lines if line.characters)

    @property
    def single(self) -> bool:
        """Exactly one character: the shape that single-character consumers read (``label``, ``top``)."""
        return len(self.characters) == 1

    @property
    def only(self) -> Character:
        """The one character of a single-character reading."""
        characters = self.characters
        if len(characters) != 1:
            raise ValueError(f"the reading holds {len(characters)} characters, not one: use text/characters")
        return characters[0]

    @property
    def label(self) -> str:
        return self.only.label

    @property
    def confidence(self) -> float:
        return self.only.confidence

    @property
    def top(self) -> tuple[Alternative, ...]:
        return self.only.top
