"""Image bytes -> one 28x28 float32 glyph in EMNIST style (white ink on black, upright, centred).

Follows EMNIST's own conversion (Cohen et al. 2017): soften, crop to the ink, centre in a square
keeping the aspect ratio with a 2-pixel border, bicubic down to 28x28, stretch to full range.
Real uploads need more first: EXIF orientation, transparency, paper-vs-ink polarity, uneven
lighting and noise, and pen strokes much thinner (relative to the glyph) than NIST's.
"""

from __future__ import annotations

import io
import re
import struct
import warnings
from collections.abc import Callable

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from PIL import Image, ImageFilter, ImageOps

from handler.records import ErrorCode

SIDE = 28
GLYPH = 24  # the glyph's longer side inside the 28x28 frame: a 2-pixel border
WORK_SCALE = 4  # normalise at 4x the output size, then downsample once
MAX_WORK_SIDE = 1024
ALLOWED_FORMATS = {"PNG", "JPEG", "MPO", "WEBP", "BMP", "TIFF", "GIF"}
IMAGE_SIGNATURES = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF87a", b"GIF89a", b"II*\x00", b"MM\x00*")
BMP_HEADER_SIZES = {12, 16, 40, 52, 56, 64, 108, 124}  # the DIB header sizes BMP files really use
MAX_JPEG_SCANS = 64  # libjpeg encoders write up to ~20; thousands of scans is a decode-time bomb
MAX_JPEG_SCAN_PIXELS = 600_000_000  # scans x pixels: each progressive scan is a pass over every block
JPEG_MARKER = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")  # a marker after entropy data (not stuffing, not RSTn)
MIN_CONTRAST = 0.15
MIN_INK_PIXELS = 4
THIN_STROKE = 0.12  # relative stroke width below which strokes are thickened (EMNIST median: 0.17)
TARGET_STROKE = 0.15
UNEVEN_BORDER = 0.1  # border brightness spread above which lighting is flattened first
BACKGROUND_SIDE = 64  # resolution of the background estimate


class ImageError(ValueError):
    """An input that cannot be labelled, with a code the user can act on."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code


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
    """Decode any supported image into grayscale float32 in [0, 1], upright, transparency on white.

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
        image = ImageOps.exif_transpose(image)
        return _to_gray(image)
    except ImageError:
        raise
    except Exception as exc:
        raise ImageError(ErrorCode.CORRUPT, f"cannot decode image: {exc}") from exc


def _to_gray(image: Image.Image) -> np.ndarray:
    if image.mode == "LAB":  # CIELAB: the L band is lightness, exactly the grey we want
        return np.asarray(image.getchannel("L"), dtype=np.float32) / 255.0
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
        return np.asarray(image.convert("L"), dtype=np.float32) / 255.0
    rgba = image.convert("RGBA")
    on_white = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba).convert("L")
    gray = np.asarray(on_white, dtype=np.float32) / 255.0
    alpha = np.asarray(rgba.getchannel("A"), dtype=np.float32) / 255.0
    if np.ptp(gray) < MIN_CONTRAST and np.ptp(alpha) >= MIN_CONTRAST:
        return 1.0 - alpha  # light ink on a transparent background: the shape is in the alpha channel
    return gray


def _otsu(values: np.ndarray) -> float:
    bins = 64
    weights = np.bincount(np.clip((values.ravel() * bins).astype(np.int64), 0, bins - 1), minlength=bins).astype(
        np.float64
    )
    edges = np.linspace(0.0, 1.0, bins + 1)
    centres = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(weights)
    w1 = w0[-1] - w0
    m0 = np.cumsum(weights * centres)
    mean0 = np.divide(m0, w0, out=np.zeros_like(m0), where=w0 > 0)
    mean1 = np.divide(m0[-1] - m0, w1, out=np.zeros_like(m0), where=w1 > 0)
    between = w0 * w1 * (mean0 - mean1) ** 2
    return float(edges[int(np.argmax(between)) + 1])


def _trimmed_extent(profile: np.ndarray, trim: float = 0.005) -> tuple[int, int]:
    """First and last index holding the central mass, so a stray speck does not stretch the crop."""
    cumulative = np.cumsum(profile) / profile.sum()
    start = int(np.searchsorted(cumulative, trim))
    stop = int(np.searchsorted(cumulative, 1.0 - trim))
    return start, min(stop, len(profile) - 1)


def _relative_stroke_width(mask: np.ndarray) -> float:
    """2 * area / perimeter approximates stroke width for thin strokes; relative to the glyph size."""
    padded = np.pad(mask, 1)
    interior = padded[1:-1, 1:-1] & padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    perimeter = int(mask.sum() - interior.sum())
    return 2.0 * mask.sum() / max(perimeter, 1) / max(mask.shape)


def _resize(values: np.ndarray, width: int, height: int, resample: Image.Resampling) -> np.ndarray:
    return np.asarray(Image.fromarray(values.astype(np.float32)).resize((width, height), resample))


def _gaussian_blur(values: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur (Pillow's GaussianBlur does not take float images)."""
    radius = int(3 * sigma)
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    taps /= taps.sum()
    padded = np.pad(values, radius)
    rows = sum(w * padded[:, i : i + values.shape[1]] for i, w in enumerate(taps))
    return sum(w * rows[i : i + values.shape[0], :] for i, w in enumerate(taps)).astype(np.float32)


def _rank_filter(values: np.ndarray, size: int, reduce: Callable[..., np.ndarray]) -> np.ndarray:
    """Square min or max filter (grey-scale erosion or dilation), separable, edges padded by replication."""
    half = size // 2
    padded = np.pad(values, half, mode="edge")
    rows = reduce(sliding_window_view(padded, size, axis=1), axis=-1)
    return reduce(sliding_window_view(rows, size, axis=0), axis=-1).astype(np.float32)


def _border(values: np.ndarray, frame: int) -> np.ndarray:
    return np.concatenate(
        [values[:frame].ravel(), values[-frame:].ravel(), values[:, :frame].ravel(), values[:, -frame:].ravel()]
    )


def _flatten_background(ink: np.ndarray, frame: int) -> np.ndarray:
    """Remove shadows and vignetting: subtract a grey-scale opening computed at low resolution.

    Only where the page's border is uneven, so tight crops and clean scans pass untouched.
    """
    height, width = ink.shape
    border = _border(ink, frame)
    if min(height, width) < 64 or np.percentile(border, 95) - np.percentile(border, 5) < UNEVEN_BORDER:
        return ink
    scale = BACKGROUND_SIDE / max(height, width)
    small = Image.fromarray(ink.astype(np.float32)).resize(
        (max(8, round(width * scale)), max(8, round(height * scale))), Image.Resampling.BOX
    )
    opened = _rank_filter(_rank_filter(np.asarray(small), 9, np.min), 9, np.max)
    background = np.asarray(Image.fromarray(opened).resize((width, height), Image.Resampling.BILINEAR))
    return np.clip(ink - background, 0.0, 1.0)


def normalise(gray: np.ndarray) -> np.ndarray:
    """Grayscale page (either polarity) -> (28, 28) float32, white ink on black, EMNIST geometry."""
    height, width = gray.shape
    if max(height, width) > MAX_WORK_SIDE:
        factor = MAX_WORK_SIDE / max(height, width)
        gray = _resize(gray, max(1, round(width * factor)), max(1, round(height * factor)), Image.Resampling.BOX)
        height, width = gray.shape
    frame = max(1, round(0.05 * min(height, width)))
    ink = 1.0 - gray if np.median(_border(gray, frame)) > 0.5 else gray  # paper is what the border shows
    if min(height, width) >= 64:  # photos and scans: a 3x3 box blur turns sensor noise and specks into faint haze
        ink_u8 = Image.fromarray(np.round(ink * 255).astype(np.uint8)).filter(ImageFilter.BoxBlur(1))
        ink = np.asarray(ink_u8, dtype=np.float32) / 255.0
    ink = _flatten_background(ink, frame)
    step = max(1, int(np.sqrt(ink.size / 16384)))  # statistics from a subsample: same answer, a fraction of the time
    sample = ink[::step, ::step]
    background = float(np.median(sample))
    peak = float(ink.max())  # after the blur: a stroke, not a stray noisy pixel
    if peak - background < MIN_CONTRAST:
        raise ImageError(ErrorCode.NO_INK, "no handwriting found: the image is blank or has almost no contrast")
    threshold = _otsu(np.clip((sample - background) / (peak - background), 0, 1))
    level = background + threshold * (peak - background)
    mask = ink > level
    if mask.sum() < MIN_INK_PIXELS:
        raise ImageError(ErrorCode.NO_INK, "no handwriting found: too little ink to read")
    top, bottom = _trimmed_extent(mask.sum(axis=1))
    left, right = _trimmed_extent(mask.sum(axis=0))
    floor = (background + level) / 2  # halfway to the threshold: keeps soft stroke edges, drops paper texture
    glyph = np.clip((ink[top : bottom + 1, left : right + 1] - floor) / (peak - floor), 0.0, 1.0)
    relative_stroke = _relative_stroke_width(mask[top : bottom + 1, left : right + 1])

    glyph_h, glyph_w = glyph.shape
    target = GLYPH * WORK_SCALE
    scale = target / max(glyph_h, glyph_w)
    new_w, new_h = max(1, round(glyph_w * scale)), max(1, round(glyph_h * scale))
    glyph = _resize(glyph, new_w, new_h, Image.Resampling.BICUBIC if scale > 1 else Image.Resampling.BOX)
    if relative_stroke < THIN_STROKE:
        grow = round((TARGET_STROKE - relative_stroke) * target)
        size = min(9, max(3, grow + 1)) | 1  # a k-pixel max filter widens strokes by k - 1
        glyph = _rank_filter(glyph, size, np.max)

    canvas_side = SIDE * WORK_SCALE
    canvas = np.zeros((canvas_side, canvas_side), dtype=np.float32)
    y0, x0 = (canvas_side - new_h) // 2, (canvas_side - new_w) // 2
    canvas[y0 : y0 + new_h, x0 : x0 + new_w] = glyph
    canvas = _gaussian_blur(canvas, sigma=1.0)
    small = np.clip(_resize(canvas, SIDE, SIDE, Image.Resampling.BICUBIC), 0.0, None)
    top_value = float(small.max())
    if top_value <= 0:
        raise ImageError(ErrorCode.NO_INK, "no handwriting found after cropping")
    return (small / top_value).astype(np.float32)


def prepare(data: bytes, max_pixels: int) -> np.ndarray:
    """Bytes -> model input, or :class:`ImageError` naming why the image cannot be read."""
    return normalise(decode(data, max_pixels))
