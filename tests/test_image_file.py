"""Reading image files for the CLI (palette_core/image_file.py): 16-bit grey, special files, huge images.

PNGs are written here by a small encoder of our own (zlib + struct, as the PNG spec lays the chunks out),
so the expected pixels do not come from Pillow, which reads them.
"""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import threading
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from PIL import Image, ImageOps

import palette_cli.main as cli
import palette_core.image_file as image_file
from palette_core.image_file import ImageFileError, read_image

REPO = Path(__file__).resolve().parents[1]


def _chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))


def png_bytes(pixels: np.ndarray, bit_depth: int = 8) -> bytes:
    """A PNG of ``pixels`` ([H, W] grey or [H, W, 3] RGB; 8- or 16-bit), every row with filter type 0."""
    h, w = pixels.shape[:2]
    colour_type = 0 if pixels.ndim == 2 else 2
    dtype = ">u2" if bit_depth == 16 else "u1"
    rows = b"".join(b"\x00" + row.astype(dtype).tobytes() for row in pixels)
    ihdr = struct.pack(">IIBBBBB", w, h, bit_depth, colour_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(rows)) + _chunk(b"IEND", b"")


def write_png(path: Path, pixels: np.ndarray, bit_depth: int = 8) -> Path:
    path.write_bytes(png_bytes(pixels, bit_depth))
    return path


def test_sixteen_bit_grey_is_scaled_not_clipped_to_white(tmp_path):
    grey = np.array([[0, 1000, 32896], [49152, 65280, 65535]], dtype=np.uint16)
    pixels = read_image(write_png(tmp_path / "g16.png", grey, 16))
    expected = grey.astype(np.float32) / np.float32(65535)
    assert pixels.shape == (2, 3, 3) and pixels.dtype == np.float32
    assert np.array_equal(pixels, np.repeat(expected[:, :, None], 3, axis=2))
    assert pixels[0, 2, 0] == pytest.approx(128 / 255, abs=1e-6)  # mid-grey, as the 8-bit 128 would be


@settings(max_examples=60, deadline=None)
@given(arrays(np.uint16, st.tuples(st.integers(1, 9), st.integers(1, 9))))
def test_any_sixteen_bit_grey_reads_as_its_value_over_65535(grey):
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        pixels = read_image(write_png(Path(tmp) / "g.png", grey, 16))
    assert np.array_equal(pixels[..., 1], grey.astype(np.float32) / np.float32(65535))
    assert np.array_equal(pixels[..., 0], pixels[..., 2])


@settings(max_examples=60, deadline=None)
@given(arrays(np.uint8, st.tuples(st.integers(1, 9), st.integers(1, 9), st.just(3))))
def test_eight_bit_rgb_reads_exactly_as_comfyuis_loader(rgb):
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        pixels = read_image(write_png(Path(tmp) / "c.png", rgb))
    assert np.array_equal(pixels, rgb.astype(np.float32) / 255.0)  # ComfyUI: np.array(i).astype(float32) / 255


def test_the_cli_histogram_of_a_sixteen_bit_grey_is_that_of_the_eight_bit_grey(tmp_path, capsys):
    for name, grey, depth in (("mid16.png", 32896, 16), ("mid8.png", 128, 8), ("white8.png", 255, 8)):
        write_png(tmp_path / name, np.full((8, 8), grey, dtype=np.uint16 if depth == 16 else np.uint8), depth)
    bins = {}
    for name in ("mid16.png", "mid8.png", "white8.png"):
        assert cli.main(["histogram", str(tmp_path / name)]) == 0
        bins[name] = capsys.readouterr().out.splitlines()[-1]  # the one occupied bin: index, h/s/v, centre, share
    assert bins["mid16.png"] == bins["mid8.png"] != bins["white8.png"]


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied_as_pillow_does(tmp_path, orientation):
    rng = np.random.default_rng(orientation)
    path = tmp_path / "o.png"
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)).save(path, exif=exif)
    with Image.open(path) as im:
        expected = np.asarray(ImageOps.exif_transpose(im).convert("RGB"), dtype=np.float32) / 255.0
    assert np.array_equal(read_image(path), expected)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes (POSIX)")
def test_a_fifo_is_refused_at_once_by_the_reader_and_the_cli(tmp_path, capsys):
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    outcome: list = []

    def attempt():
        try:
            read_image(fifo)
        except ImageFileError as e:
            outcome.append(str(e))
        outcome.append(cli.main(["extract", str(fifo)]))

    worker = threading.Thread(target=attempt, daemon=True)
    worker.start()
    worker.join(30)
    if worker.is_alive():  # blocked on the FIFO: release it with a writer that closes at once, then fail
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        pytest.fail("reading the FIFO blocked")
    assert outcome == [f"{fifo}: is a FIFO (named pipe): expected a regular file", 2]
    assert f"{fifo}: is a FIFO (named pipe): expected a regular file" in capsys.readouterr().err


@pytest.mark.skipif(not Path("/dev/zero").exists(), reason="needs /dev/zero")
def test_a_device_is_refused_not_read_forever(capsys):
    with pytest.raises(ImageFileError, match=r"^/dev/zero: is a character device: expected a regular file$"):
        read_image("/dev/zero")
    assert cli.main(["distance", "/dev/zero.png", "#fff"]) == 2  # no such file: not confused with the device
    assert cli.main(["histogram", "/dev/zero"]) == 2
    assert "/dev/zero: is a character device" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (b"", "not an image (expected a PNG, JPEG, WebP, BMP, TIFF or GIF file)"),
        (b"GIF89a not really", "not an image"),
        (png_bytes(np.zeros((64, 64, 3), np.uint8))[:60], "cannot read the image"),
        # a header that claims 20,000 x 20,000: refused before any pixel is decoded
        (
            b"\x89PNG\r\n\x1a\n"
            + _chunk(b"IHDR", struct.pack(">IIBBBBB", 20000, 20000, 8, 2, 0, 0, 0))
            + _chunk(b"IDAT", zlib.compress(b""))
            + _chunk(b"IEND", b""),
            "too large to read safely: Image size (400000000 pixels) exceeds limit",
        ),
    ],
)
def test_broken_files_are_named_by_the_path_given(tmp_path, content, says):
    path = tmp_path / "broken.png"
    path.write_bytes(content)
    with pytest.raises(ImageFileError) as caught:
        read_image(path, 256)
    message = str(caught.value)
    assert message.startswith(f"{path}: {says}")
    assert "<_io" not in message and "name=" not in message and ".tmp" not in message


def test_large_images_are_decoded_reduced_to_a_box_average(tmp_path, monkeypatch):
    monkeypatch.setattr(image_file, "REDUCE_ABOVE", 0)  # reduce even this small image
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (90, 128, 3), dtype=np.uint8)
    path = write_png(tmp_path / "r.png", rgb)
    pixels = read_image(path, target=10)  # keeps >= 30 per side: boxes of 3 rows x 4 columns
    boxes = rgb.reshape(30, 3, 32, 4, 3).astype(np.float64).mean(axis=(1, 3))
    assert pixels.shape == (30, 32, 3)
    assert np.abs(pixels * 255 - boxes).max() <= 0.5 + 1e-4  # Pillow rounds each box mean to 8 bits
    assert np.array_equal(read_image(path), rgb.astype(np.float32) / 255.0)  # no target: whole


def test_a_large_jpeg_is_scaled_while_decoding(tmp_path, monkeypatch):
    monkeypatch.setattr(image_file, "REDUCE_ABOVE", 0)
    path = tmp_path / "photo.jpg"
    y, x = np.mgrid[0:1500, 0:2000]
    Image.fromarray(np.stack([x % 256, y % 256, (x + y) % 256], -1).astype(np.uint8)).save(path, quality=90)
    # keep 3 x 64 = 192 per side: the JPEG decoder scales by 1/4 (500 x 375), then 2 x 1 boxes
    assert read_image(path, target=64).shape == (375, 250, 3)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated 90 degrees: the reduced image is turned too
    Image.open(path).save(path, exif=exif, quality=90)
    assert read_image(path, target=64).shape == (250, 375, 3)


def test_images_up_to_the_threshold_are_read_whole(tmp_path):
    rgb = np.random.default_rng(2).integers(0, 256, (40, 50, 3), dtype=np.uint8)
    path = write_png(tmp_path / "small.png", rgb)
    assert np.array_equal(read_image(path, target=4), rgb.astype(np.float32) / 255.0)


# Peak resident memory of this process: VmHWM, which starts afresh at exec (ru_maxrss does not: Linux keeps
# the parent's across execve, which would hide the reader's own peak below the test runner's).
PEAK = """
import sys
import numpy, PIL.Image
from palette_core.image_file import read_image
def peak_kb():
    return int(next(l for l in open("/proc/self/status") if l.startswith("VmHWM")).split()[1])
before = peak_kb()
pixels = read_image(sys.argv[1], 256)
print(pixels.shape[0], pixels.shape[1], (peak_kb() - before) // 1024, float(pixels[5, 0, 0]), float(pixels[5, -1, 0]))
"""


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads the peak memory from /proc (Linux)")
def test_a_12000_square_png_is_extracted_from_without_gigabytes(tmp_path):
    """Read whole as float RGB it would take 12,000² x 3 x 4 B = 1.7 GB (and ~5 GB with Pillow's copies)."""
    side = 12000
    row = b"\x00" + (np.arange(side) * 255 // (side - 1)).astype(np.uint8).tobytes()  # a grey ramp
    packer = zlib.compressobj(1)
    data = b"".join(packer.compress(row) for _ in range(side)) + packer.flush()
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    path = tmp_path / "huge.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", data) + _chunk(b"IEND", b""))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    run = subprocess.run([sys.executable, "-c", PEAK, str(path)], capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr
    assert run.stderr == ""  # no DecompressionBombWarning either
    h, w, peak_mb, left, right = run.stdout.split()
    assert (int(h), int(w)) == (800, 800)  # 12,000 / 15: at least 3 x 256 per side
    assert int(peak_mb) < 400, f"peak grew by {peak_mb} MB"  # Pillow's 8-bit grey buffer is 144 MB of it
    ramp = np.arange(side) * 255 // (side - 1)
    assert float(left) * 255 == pytest.approx(round(ramp[:15].mean()), abs=1e-4)  # box means of 15 columns
    assert float(right) * 255 == pytest.approx(round(ramp[-15:].mean()), abs=1e-4)
