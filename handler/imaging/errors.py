"""Why an input cannot be read: the codes a user can act on, and the one exception image code raises."""

from __future__ import annotations

from enum import StrEnum


class ErrorCode(StrEnum):
    """What a user can act on: re-upload, convert, shrink, or check the page has writing. ``NotFound``: the
    object was deleted before it was read. ``Unreadable``: the service failed on this image (a bug, logged
    with its traceback): report it; the rest of the batch goes on, and retrying the same bytes would fail
    the same way."""

    EMPTY = "Empty"
    CORRUPT = "Corrupt"
    UNSUPPORTED = "Unsupported"
    TOO_LARGE = "TooLarge"
    NO_INK = "NoInk"
    NOT_FOUND = "NotFound"
    UNREADABLE = "Unreadable"


class ImageError(ValueError):
    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code

    def __reduce__(self) -> tuple[type[ImageError], tuple[ErrorCode, str]]:
        return type(self), (self.code, str(self))  # crosses the pipe from a worker process intact


def unreadable(exc: Exception) -> ImageError:
    """A bug of ours on one image, as that image's error: retrying the same bytes would fail the same way."""
    return ImageError(ErrorCode.UNREADABLE, f"the service failed to read this image ({type(exc).__name__}); reported")
