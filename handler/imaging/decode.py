"""Bytes -> pixels: limits and budgets first (bytes, pixels, JPEG scans), then EXIF, modes, transparency.

Returns grayscale, upright, transparency composited on white: ``uint8`` for 8-bit sources (the
common case, kept in integers for speed), ``float32`` in [0, 1] for 16-bit and float sources.
"""

from __future__ import annotations

import io
import re
import struct
import warnings

import numpy as np
from PIL import Image, ImageOps

from handler.imaging.errors import ErrorCode, ImageError

EXIF_ORIENTATION = 0x0112
MAX_WORK_SIDE = 1024  # the normaliser never looks at more than this; larger images are reduced early
ALLOWED_FORMATS = {"PNG", "JPEG", "MPO", "WEBP", "BMP", "TIFF", "GIF"}
IMAGE_SIGNATURES = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF87a", b"GIF89a", b"II*\x00", b"MM\x00*")
BMP_HEADER_SIZES = {12, 16, 40, 52, 56, 64, 108, 124}  # the DIB header sizes BMP files really use
MAX_JPEG_SCANS = 64  # libjpeg encoders write up to ~20; thousands of scans is a decode-time bomb
MAX_JPEG_SCAN_PIXELS = 600_000_000  # scans x pixels: each progressive scan is a pass over every block
JPEG_MARKER = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")  # a marker after entropy data (not stuffing, not RSTn)
MIN_CONTRAST = 0.15


def _looks_like_an_image(data: bytes) -> bool:
    """A real image signature, strict enough that a text file starting with 'BM' or a WAV file is not one."""
    if data.startswith(IMAGE_SIGNATURES):
        return True
    if data.startswith(b"BM") and len(data) >= 18:
        return struct.unpack("<I", data[14:18])[0] in BMP_HEADER_SIZES
    return data.startswith(b"RIFF") and data[8:12] == b"WEBP"


def check_jpeg_budget(data: bytes, max_pixels: int) -> None:
    """Walk a JPEG's markers before decoding: refuse scan floods and files shorter than their header says.

    Each progressive scan is a pass over every block, so decoding time grows with scans x pixels,
    not with the file's size: a 1 MB file of thousands of tiny scans takes minutes. And a header
    that promises more pixels than the data can hold decodes to a flat grey that looks like a page.
    """
    scans, frame, huffman, entropy_bytes, position = 0, (0, 0), True, 0, 2
    while position + 4 <= len(data):
        if data[position] != 0xFF:
            raise ImageError(ErrorCode.CORRUPT, f"cannot decode image: JPEG marker expected at byte {position}")
        marker = data[position + 1]
        if marker == 0xFF:  # fill byte
            position += 1
            continue
        if marker == 0xD9:  # end of image
            break
        if 0xD0 <= marker <= 0xD7 or marker == 0x01:
            position += 2
            continue
        length = struct.unpack(">H", data[position + 2 : position + 4])[0]
        if marker in (0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF) and length >= 7:
            height, width = struct.unpack(">HH", data[position + 5 : position + 9])
            frame, huffman = (width, height), marker in (0xC0, 0xC1, 0xC2)
        position += 2 + length
        if marker == 0xDA:
            scans += 1
            width, height = frame
            if scans > MAX_JPEG_SCANS or scans * width * height > min(
                MAX_JPEG_SCAN_PIXELS, MAX_JPEG_SCANS * max_pixels
            ):
                raise ImageError(
                    ErrorCode.TOO_LARGE,
                    f"JPEG has too many scans for its size ({scans}+ scans of {width}x{height}): decoding it would take minutes",
                )
            found = JPEG_MARKER.search(data, position)
            end = found.start() if found else len(data)
            entropy_bytes += end - position
            position = end
    width, height = frame
    blocks = -(-width // 8) * -(-height // 8)
    if huffman and scans and entropy_bytes * 8 < blocks:  # Huffman coding spends at least one bit per block
        raise ImageError(
            ErrorCode.CORRUPT,
            f"cannot decode image: the JPEG header says {width}x{height} but the file holds data for far fewer pixels (truncated)",
        )


def decode(data: bytes, max_pixels: int) -> np.ndarray:
    """Decode any supported image into grayscale (uint8, or float32 in [0, 1]), upright, transparency on white."""
    return decode_sized(data, max_pixels)[0]


def decode_sized(data: bytes, max_pixels: int) -> tuple[np.ndarray, tuple[int, int]]:
    """:func:`decode`, and the input's upright (width, height) in pixels, which boxes are reported in.

    Budgets come before work: pixel count from the header, JPEG scans from its markers; images far
    larger than the normaliser uses are reduced right after decoding, so memory stays near one
    8-bit copy of the input.
    """
    if not data:
        raise ImageError(ErrorCode.EMPTY, "the object is empty (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError(ErrorCode.TOO_LARGE, f"image has too many pixels: {exc}") from exc
    except Exception as exc:
        if _looks_like_an_image(data):
            raise ImageError(ErrorCode.CORRUPT, "cannot decode image: the header is damaged") from exc
        raise ImageError(
            ErrorCode.UNSUPPORTED, "not an image in a supported format (PNG, JPEG, WebP, BMP, TIFF, GIF)"
        ) from exc
    if image.format not in ALLOWED_FORMATS:
        raise ImageError(ErrorCode.UNSUPPORTED, f"{image.format} images are not supported; use PNG or JPEG")
    width, height = image.size
    if width * height > max_pixels:
        raise ImageError(
            ErrorCode.TOO_LARGE, f"image is {width}x{height} = {width * height:,} pixels; the limit is {max_pixels:,}"
        )
    if image.format in ("JPEG", "MPO"):
        check_jpeg_budget(data, max_pixels)
    try:
        image.seek(0)
        if image.format in ("JPEG", "MPO"):  # decode big photos at a reduced DCT scale: no larger than we use
            image.draft("L", (MAX_WORK_SIDE, MAX_WORK_SIDE))
        image.load()
        factor = max(image.size) // MAX_WORK_SIDE
        if factor >= 2 and image.mode not in ("P", "1"):  # bound memory: reduce once, before any conversion
            image = image.reduce(factor)
        orientation = image.getexif().get(EXIF_ORIENTATION, 1)
        upright = (height, width) if orientation in (5, 6, 7, 8) else (width, height)
        if orientation in (2, 3, 4, 5, 6, 7, 8):  # otherwise exif_transpose would only copy (85 us a photo)
            image = ImageOps.exif_transpose(image)
        return _to_gray(image), upright
    except ImageError:
        raise
    except Exception as exc:
        raise ImageError(ErrorCode.CORRUPT, f"cannot decode image: {exc}") from exc


def _to_gray(image: Image.Image) -> np.ndarray:
    if image.mode == "LAB":  # CIELAB: the L band is lightness, exactly the grey we want
        return np.asarray(image.getchannel("L"))
    if image.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        values = np.asarray(image, dtype=np.float32)
        finite = np.isfinite(values)
        if not finite.all():  # NaN or infinite samples: damaged pixels, painted as the page around them
            if not finite.any():
                raise ImageError(ErrorCode.CORRUPT, "cannot decode image: no finite pixel values")
            values = np.where(finite, values, np.median(values[finite]))
        peak = 1.0 if image.mode == "F" and values.max() <= 1.0 else 255.0
        if image.mode != "F" and (image.mode.startswith("I;16") or values.max() > 255):
            peak = 65535.0
        return np.clip(values / peak, 0.0, 1.0)
    has_alpha = image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info
    if not has_alpha:
        return np.asarray(image if image.mode == "L" else image.convert("L"))
    rgba = image.convert("RGBA")
    on_white = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba).convert("L")
    gray = np.asarray(on_white)
    alpha = np.asarray(rgba.getchannel("A"))
    if np.ptp(gray) < MIN_CONTRAST * 255 and np.ptp(alpha) >= MIN_CONTRAST * 255:
        return 255 - alpha  # light ink on a transparent background: the shape is in the alpha channel
    return gray
