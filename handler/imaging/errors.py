"""The one exception image code raises: an input that cannot be labelled, with a code a user can act on."""

from __future__ import annotations

from handler.records import ErrorCode


class ImageError(ValueError):
    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
