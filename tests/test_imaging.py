"""Image bytes -> EMNIST-style 28x28: every upload format and the edge cases real users send."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from handler.imaging import ImageError, decode, normalise, prepare
from handler.imaging.errors import ErrorCode
from tests.conftest import draw_seven, png_bytes

LIMIT = 40_000_000


def ink_box(glyph: np.ndarray, level: float = 0.3) -> tuple[int, int, int, int]:
    rows = np.flatnonzero((glyph > level).any(axis=1))
    cols = np.flatnonzero((glyph > level).any(axis=0))
    return int(rows[0]), int(rows[-1]), int(cols[0]), int(cols[-1])


def reference(seven: Image.Image) -> np.ndarray:
    return prepare(png_bytes(seven), LIMIT)


def similar(a: np.ndarray, b: np.ndarray) -> bool:
    return float(np.abs(a - b).mean()) < 0.04


def test_output_is_emnist_style_28x28_white_ink_on_black(seven: Image.Image) -> None:
    glyph = reference(seven)
    assert glyph.shape == (28, 28) and glyph.dtype == np.float32
    assert glyph.max() == pytest.approx(1.0) and glyph.min() >= 0.0
    assert glyph[0].max() < 0.05 and glyph[:, 0].max() < 0.05  # black border around white ink
    assert glyph.mean() < 0.35


def test_glyph_is_centred_with_two_pixel_border(seven: Image.Image) -> None:
    top, bottom, left, right = ink_box(reference(seven))
    assert 22 <= max(bottom - top, right - left) + 1 <= 26
    assert abs((top + bottom) / 2 - 13.5) <= 1.0 and abs((left + right) / 2 - 13.5) <= 1.0


def test_orientation_is_kept_upright(seven: Image.Image) -> None:
    glyph = reference(seven)
    assert glyph[2:5, 5:22].mean() > 0.6  # the 7's bar is on top, not at the bottom or the side
    assert glyph[23:26, 5:22].mean() < 0.3
    assert glyph[21:26, 4:14].mean() > glyph[21:26, 14:24].mean() + 0.2  # the stem ends bottom-left


@pytest.mark.parametrize(
    ("fmt", "mode"),
    [
        ("PNG", "L"),
        ("PNG", "RGB"),
        ("PNG", "P"),
        ("JPEG", "RGB"),
        ("JPEG", "L"),
        ("WEBP", "RGB"),
        ("BMP", "RGB"),
        ("TIFF", "L"),
        ("TIFF", "RGB"),
        ("GIF", "P"),
    ],
)
def test_every_upload_format_reads_the_same(seven: Image.Image, fmt: str, mode: str) -> None:
    data = png_bytes(seven.convert(mode), format=fmt, **({"quality": 92} if fmt in ("JPEG", "WEBP") else {}))
    assert similar(prepare(data, LIMIT), reference(seven))


def test_sixteen_bit_grayscale(seven: Image.Image) -> None:
    wide = Image.fromarray((np.asarray(seven, dtype=np.uint16) * 257).astype(np.uint16))
    assert wide.mode.startswith("I;16")
    assert similar(prepare(png_bytes(wide), LIMIT), reference(seven))


def test_transparent_background_is_composited_on_white(seven: Image.Image) -> None:
    rgba = Image.new("RGBA", seven.size, (0, 0, 90, 0))
    rgba.putalpha(Image.eval(seven, lambda v: 255 - v))  # dark ink opaque, paper transparent
    assert similar(prepare(png_bytes(rgba), LIMIT), reference(seven))


def test_white_ink_on_transparent_background_reads_from_alpha(seven: Image.Image) -> None:
    rgba = Image.new("RGBA", seven.size, (255, 255, 255, 0))
    rgba.putalpha(Image.eval(seven, lambda v: 255 - v))
    assert similar(prepare(png_bytes(rgba), LIMIT), reference(seven))


def test_light_ink_on_dark_equals_dark_ink_on_light(seven: Image.Image) -> None:
    inverted = Image.eval(seven, lambda v: 255 - v)
    assert similar(prepare(png_bytes(inverted), LIMIT), reference(seven))


def test_exif_orientation_is_applied(seven: Image.Image) -> None:
    rotated = seven.rotate(90, expand=True)  # stored sideways, EXIF says "rotate 90 CW to view"
    exif = Image.Exif()
    exif[0x0112] = 6
    data = png_bytes(rotated.convert("RGB"), format="JPEG", exif=exif.tobytes(), quality=95)
    assert similar(prepare(data, LIMIT), reference(seven))


STORED_AS = {  # how a camera stores an upright picture for each EXIF orientation (1: as it is)
    1: None,
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_90,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_270,
}


@pytest.mark.parametrize("orientation", sorted(STORED_AS))
def test_every_exif_orientation_decodes_to_the_upright_pixels(seven: Image.Image, orientation: int) -> None:
    upright = seven.crop((0, 0, 200, 150))  # not square: a missed rotation changes the shape
    operation = STORED_AS[orientation]
    stored = upright.transpose(operation) if operation is not None else upright
    exif = Image.Exif()
    exif[0x0112] = orientation
    assert np.array_equal(decode(png_bytes(stored, exif=exif.tobytes()), LIMIT), np.asarray(upright))


def test_gif_uses_first_frame(seven: Image.Image) -> None:
    blank = Image.new("L", seven.size, 235)
    buffer = io.BytesIO()
    seven.convert("P").save(buffer, format="GIF", save_all=True, append_images=[blank.convert("P")])
    assert similar(prepare(buffer.getvalue(), LIMIT), reference(seven))


def test_off_centre_large_noisy_photo_matches_clean_glyph(seven: Image.Image) -> None:
    rng = np.random.default_rng(0)
    page = np.full((900, 1200), 225.0)
    page += np.linspace(-15, 15, 1200)[None, :]  # uneven lighting
    page[80:280, 850:1050] = np.minimum(page[80:280, 850:1050], np.asarray(seven, dtype=float))
    page += rng.normal(0, 6, page.shape)
    photo = Image.fromarray(np.clip(page, 0, 255).astype(np.uint8)).convert("RGB")
    glyph = prepare(png_bytes(photo, format="JPEG", quality=80), LIMIT)
    assert float(np.abs(glyph - reference(seven)).mean()) < 0.06


def test_shadow_across_the_page_is_flattened(seven: Image.Image) -> None:
    yy, xx = np.mgrid[0:600, 0:800]
    page = 230.0 - 100 * (xx / 800) ** 1.5 - 50 * (yy / 600)  # darker toward one corner
    ink = np.asarray(seven, dtype=float) / 255
    page[150:350, 100:300] = page[150:350, 100:300] * ink + 20 * (1 - ink)
    photo = Image.fromarray(np.clip(page, 0, 255).astype(np.uint8))
    assert similar(prepare(png_bytes(photo, format="JPEG", quality=85), LIMIT), reference(seven))


def test_tall_glyph_keeps_its_aspect_ratio() -> None:
    image = Image.new("L", (300, 300), 255)
    image.paste(0, (140, 30, 160, 270))  # a '1': 20 wide, 240 tall
    top, bottom, left, right = ink_box(prepare(png_bytes(image), LIMIT))
    assert bottom - top >= 21 and right - left <= 6


def test_thin_pen_strokes_are_thickened_to_emnist_weight() -> None:
    image = draw_seven(600, stroke=4)
    glyph = prepare(png_bytes(image), LIMIT)
    assert (glyph > 0.5).sum() >= 35  # a hairline would leave only a faint, broken trace


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b"", ErrorCode.EMPTY),
        (b"hello, this is a text file", ErrorCode.UNSUPPORTED),
        (b"%PDF-1.7\n%...", ErrorCode.UNSUPPORTED),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, ErrorCode.CORRUPT),
    ],
)
def test_unreadable_bytes_get_an_actionable_code(data: bytes, code: ErrorCode) -> None:
    with pytest.raises(ImageError) as caught:
        prepare(data, LIMIT)
    assert caught.value.code == code and str(caught.value)


def test_truncated_jpeg_is_corrupt(seven: Image.Image) -> None:
    data = png_bytes(seven.convert("RGB"), format="JPEG")
    with pytest.raises(ImageError) as caught:
        prepare(data[: len(data) // 3], LIMIT)
    assert caught.value.code == ErrorCode.CORRUPT


def test_pixel_count_is_checked_before_decoding() -> None:
    # A 30000x30000 PNG header over a few bytes of data: a decompression bomb.
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", 30000, 30000, 8, 0, 0, 0, 0)
    data = (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )
    with pytest.raises(ImageError) as caught:
        decode(data, max_pixels=LIMIT)
    assert caught.value.code == ErrorCode.TOO_LARGE and "pixels" in str(caught.value)


@pytest.mark.parametrize("noise", [0.0, 4.0])
def test_blank_page_is_no_ink(noise: float) -> None:
    rng = np.random.default_rng(1)
    page = np.clip(230 + rng.normal(0, noise, (400, 300)), 0, 255).astype(np.uint8)
    with pytest.raises(ImageError) as caught:
        prepare(png_bytes(Image.fromarray(page), format="JPEG"), LIMIT)
    assert caught.value.code == ErrorCode.NO_INK


def test_emnist_style_input_passes_through_nearly_unchanged(seven: Image.Image) -> None:
    emnist_style = reference(seven)
    assert float(np.abs(normalise(emnist_style) - emnist_style).mean()) < 0.03


@pytest.mark.parametrize("shape", [(64, 64), (65, 301), (346, 346), (700, 1024)])
def test_box_blur_matches_pillow_byte_for_byte(shape: tuple[int, int]) -> None:
    from PIL import ImageFilter

    from handler.imaging.ops import box_blur3

    values = np.random.default_rng(sum(shape)).integers(0, 256, shape, dtype=np.uint8)
    expected = np.asarray(Image.fromarray(values).filter(ImageFilter.BoxBlur(1)))
    assert np.array_equal(box_blur3(values), expected)


def test_pillows_fixed_point_box_rounding_is_sum_plus_one_over_three() -> None:
    """Why box_blur3 may stay in uint16: Pillow's 8.24 rounding of every sum of three bytes, exhaustively."""
    sums = np.arange(3 * 255 + 1, dtype=np.int64)
    assert np.array_equal((sums * ((1 << 24) // 3) + (1 << 23)) >> 24, (sums + 1) // 3)


@pytest.mark.parametrize("shape", [(1, 1), (1, 7), (7, 1), (2, 2), (3, 5)])
def test_box_blur_matches_pillow_on_slivers(shape: tuple[int, int]) -> None:
    from PIL import ImageFilter

    from handler.imaging.ops import box_blur3

    values = np.random.default_rng(sum(shape)).integers(0, 256, shape, dtype=np.uint8)
    expected = np.asarray(Image.fromarray(values).filter(ImageFilter.BoxBlur(1)))
    assert np.array_equal(box_blur3(values), expected)


def test_histogram_statistics_equal_numpys_on_the_float_values() -> None:
    from handler.imaging import ops

    values = np.random.default_rng(3).integers(0, 256, 4001, dtype=np.uint8)
    counts = ops.histogram(values)
    as_float = values.astype(np.float32) / 255.0
    assert ops.median_u8(counts) == float(np.median(as_float))
    assert ops.median_u8(ops.histogram(values[:4000])) == float(np.median(as_float[:4000]))
    for q in (5, 50, 95):
        assert ops.percentile_u8(counts, q) / 255 == pytest.approx(float(np.percentile(as_float, q)), abs=1e-6)


def test_real_emnist_images_reach_the_model_as_their_own_pixels() -> None:
    """An image already in EMNIST's format is not normalised again (that would blur and shift it)."""
    from pathlib import Path

    fixtures = Path(__file__).resolve().parent / "fixtures" / "normaliser"
    for path in sorted(fixtures.glob("emnist-*.png")):
        pixels = np.asarray(Image.open(path), dtype=np.float32)
        np.testing.assert_array_equal(prepare(path.read_bytes(), LIMIT), pixels / pixels.max())
        inverted = png_bytes(Image.fromarray(255 - pixels.astype(np.uint8)))  # black ink on white: same glyph
        np.testing.assert_allclose(prepare(inverted, LIMIT), pixels / pixels.max(), atol=1e-6)


def test_a_small_off_centre_28x28_image_is_still_normalised() -> None:
    canvas = Image.new("L", (28, 28), 0)
    canvas.paste(Image.fromarray(255 - np.asarray(draw_seven(12, stroke=2, ink=0, paper=255))), (1, 1))
    glyph = prepare(png_bytes(canvas), LIMIT)
    top, bottom, left, right = ink_box(glyph)
    assert abs((top + bottom) / 2 - 13.5) <= 2 and abs((left + right) / 2 - 13.5) <= 2  # centred by the normaliser


@pytest.mark.parametrize("size", [3, 5, 9, 15])
def test_rank_filter_is_the_min_and_max_over_each_window(size: int) -> None:
    from handler.imaging.ops import rank_filter

    values = np.random.default_rng(size).random((11, 17)).astype(np.float32)
    padded = np.pad(values, size // 2, mode="edge")
    windows = np.lib.stride_tricks.sliding_window_view(padded, (size, size))
    assert np.array_equal(rank_filter(values, size, np.maximum), windows.max(axis=(2, 3)))
    assert np.array_equal(rank_filter(values, size, np.minimum), windows.min(axis=(2, 3)))


@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
def test_images_made_and_read_back_are_pillows_own(dtype: type) -> None:
    from handler.imaging.ops import image_of, pixels_of

    values = (np.random.default_rng(0).random((13, 21)) * 255).astype(dtype)
    for array in (values, values[::2, 1::3], values[4]):  # contiguous, strided, one row
        made, expected = image_of(array), Image.fromarray(np.atleast_2d(array))
        assert (made.mode, made.size, made.tobytes()) == (expected.mode, expected.size, expected.tobytes())
        read = pixels_of(made.resize((5, 4), Image.Resampling.BILINEAR))
        assert read.dtype == dtype
        assert np.array_equal(read, np.asarray(expected.resize((5, 4), Image.Resampling.BILINEAR)))


@pytest.mark.parametrize(("shape", "half"), [((11, 17), 1), ((11, 17), 7), ((1, 3), 4), ((32, 8), 7)])
def test_edge_padding_is_numpys(shape: tuple[int, int], half: int) -> None:
    from handler.imaging.ops import pad_edge

    values = np.random.default_rng(half).random(shape).astype(np.float32)
    assert np.array_equal(pad_edge(values, half), np.pad(values, half, mode="edge"))


@pytest.mark.parametrize("resample", [Image.Resampling.BICUBIC, Image.Resampling.BOX])
def test_resize_matrix_is_pillows_resize(resample: Image.Resampling) -> None:
    from handler.imaging.ops import resize, resize_matrix

    values = np.random.default_rng(int(resample)).random((37, 53)).astype(np.float32)
    for height, width in [(96, 70), (24, 96), (37, 53), (5, 200), (1, 1)]:
        folded = resize_matrix(37, height, resample) @ values @ resize_matrix(53, width, resample).T
        assert np.abs(folded - resize(values, width, height, resample)).max() < 1e-5, (height, width)
