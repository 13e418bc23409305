"""Files built to hurt: each gets the right error code quickly, or is read, and never stalls a batch."""

from __future__ import annotations

import io
import struct
import time

import numpy as np
import pytest
from PIL import Image

from handler import imaging
from handler.imaging import ImageError
from tests.conftest import draw_seven, png_bytes

MAX_PIXELS = 40_000_000


def code_of(data: bytes) -> str:
    with pytest.raises(ImageError) as caught:
        imaging.prepare(data, MAX_PIXELS)
    return str(caught.value.code)


def jpeg_segments(data: bytes) -> list[tuple[int, bytes]]:
    """(marker, bytes) for each segment; a scan segment runs to the next real marker."""
    segments, i = [], 2
    while data[i + 1] != 0xD9:
        marker, length = data[i + 1], struct.unpack(">H", data[i + 2 : i + 4])[0]
        end = i + 2 + length
        if marker == 0xDA:
            while not (data[end] == 0xFF and data[end + 1] not in (0x00, *range(0xD0, 0xD8))):
                end += 1
        segments.append((marker, data[i:end]))
        i = end
    return segments


def scan_flood(side: int, repeats: int) -> bytes:
    """A progressive JPEG of a blank page whose second scan is repeated: small file, endless decode."""
    buffer = io.BytesIO()
    Image.new("L", (side, side), 255).save(buffer, "JPEG", progressive=True)
    segments = jpeg_segments(buffer.getvalue())
    header = b"".join(body for marker, body in segments if marker != 0xDA)
    scans = [body for marker, body in segments if marker == 0xDA]
    return b"\xff\xd8" + header + scans[0] + scans[1] * repeats + b"\xff\xd9"


def test_a_jpeg_flooded_with_scans_is_refused_before_decoding() -> None:
    bomb = scan_flood(3000, 2500)
    assert len(bomb) < 2_000_000
    started = time.perf_counter()
    assert code_of(bomb) == "TooLarge"
    assert time.perf_counter() - started < 1.0  # refused from its markers, not after minutes of decoding


def test_an_ordinary_progressive_jpeg_still_reads() -> None:
    photo = png_bytes(draw_seven(1200).convert("RGB"), format="JPEG", progressive=True)
    assert imaging.prepare(photo, MAX_PIXELS).shape == (28, 28)


def test_a_jpeg_whose_header_promises_more_pixels_than_its_data_holds_is_corrupt() -> None:
    data = bytearray(
        png_bytes(Image.fromarray((np.random.default_rng(1).random((200, 200)) * 255).astype("uint8")), format="JPEG")
    )
    frame = data.index(b"\xff\xc0")
    data[frame + 5 : frame + 9] = struct.pack(">HH", 6000, 6000)
    assert code_of(bytes(data)) == "Corrupt"


@pytest.mark.parametrize(
    "data",
    [b"BM is how this text file starts, not a bitmap", b"RIFF\x24\x00\x00\x00WAVEfmt " + b"\x00" * 40],
    ids=["text starting with BM", "WAV"],
)
def test_files_that_are_not_images_are_unsupported_not_corrupt(data: bytes) -> None:
    assert code_of(data) == "Unsupported"


def test_a_damaged_real_bmp_is_corrupt() -> None:
    bmp = png_bytes(draw_seven(), format="BMP")
    assert code_of(bmp[:30] + b"\x00" * 10) == "Corrupt"


def test_a_lab_tiff_is_read_from_its_lightness() -> None:
    gray = np.asarray(draw_seven(), dtype=np.uint8)
    lab = Image.merge("LAB", [Image.fromarray(gray), Image.new("L", (200, 200), 128), Image.new("L", (200, 200), 128)])
    from_lab = imaging.prepare(png_bytes(lab, format="TIFF"), MAX_PIXELS)
    from_gray = imaging.prepare(png_bytes(Image.fromarray(gray)), MAX_PIXELS)
    assert np.abs(from_lab - from_gray).max() < 1e-6


def test_a_float_tiff_with_a_nan_pixel_is_read_not_blank() -> None:
    values = np.asarray(draw_seven(), dtype=np.float32) / 255
    values[0, 0] = np.nan
    glyph = imaging.prepare(png_bytes(Image.fromarray(values, "F"), format="TIFF"), MAX_PIXELS)
    assert np.isfinite(glyph).all() and glyph.max() == 1.0


def test_a_huge_image_is_reduced_before_it_is_converted() -> None:
    """A 40 MP RGBA page: decode reduces it once, so no full-size float copies are made."""
    image = Image.new("RGBA", (8000, 5000), (255, 255, 255, 255))
    image.paste(draw_seven(3000).convert("RGBA"), (2500, 1000))
    gray = imaging.decode(png_bytes(image), MAX_PIXELS)
    assert max(gray.shape) <= 2 * imaging.MAX_WORK_SIDE
