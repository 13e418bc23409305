"""The one exception image code raises: an input that cannot be labelled, with a code a user can act on."""

from __future__ import annotations

from handler.records import ErrorCode


class ImageError(ValueError):
    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code

    def __reduce__(self) -> tuple[type[ImageError], tuple[ErrorCode, str]]:
        return type(self), (self.code, str(self))  # crosses the pipe from a worker process intact


def unreadable(exc: Exception) -> ImageError:
    """A bug of ours on one image, as that image's error: retrying the same bytes would fail the same way."""
    return ImageError(ErrorCode.UNREADABLE, f"the service failed to read this image ({type(exc).__name__}); reported")
