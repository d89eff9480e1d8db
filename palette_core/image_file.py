"""Image files as float sRGB pixels for the command-line programs (docs/extraction.md, "Image files").

* Only regular files are opened: a FIFO or a device would block, or never end; it is refused at once.
* 16-bit greyscale (Pillow's modes ``I;16*`` and ``I``) is scaled by 1/65535 and 32-bit float grey
  (``F``) is taken as [0, 1]; Pillow's own ``convert("RGB")`` clips both, so mid-grey came out white.
* An operation that resamples the image to ``target x target`` pixels anyway (``palette extract``: 256)
  can have a very large image (over ``REDUCE_ABOVE`` pixels) decoded reduced, keeping at least
  ``REDUCING_GAP x target`` pixels per side: JPEG's DCT scaling (``Image.draft``) while decoding, then an
  integer box reduction (``Image.reduce``), as Pillow's ``resize(reducing_gap=...)`` does. A 12,000²
  image then never becomes a 1.7 GB float array. Smaller images are read whole, so their results do not
  change.

Errors are ImageFileError, naming the path the caller gave (never a descriptor or a temporary file).
"""

from __future__ import annotations

import logging
import os
import stat
import warnings
from typing import TYPE_CHECKING, BinaryIO

from .errors import PaletteError

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image as PILImage

log = logging.getLogger(__name__)

# Decode at least this many times the target side: a box reduction to there and the operation's own
# (antialiased) resample then differ from resampling the full image by a quarter of an 8-bit level on
# average, one level at the 99th percentile, more only on hard edges (bench/bench_image_file.py).
REDUCING_GAP = 3
REDUCE_ABOVE = 1 << 24  # pixels (16.8 M, e.g. 4096 x 4096): larger images are decoded reduced when allowed
IMAGE_KINDS = "a PNG, JPEG, WebP, BMP, TIFF or GIF file"
_SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N", "I")  # "I": how some Pillow versions open 16-bit PNG
_ORIENTATION = 0x0112  # EXIF tag
# EXIF orientation -> PIL.Image.Transpose value (what ImageOps.exif_transpose applies)
_TRANSPOSE = {2: 0, 3: 3, 4: 1, 5: 5, 6: 4, 7: 6, 8: 2}


class ImageFileError(PaletteError):
    """An image file cannot be read: not a regular file, not an image, damaged or too large."""


def _kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISDIR, "a folder"),
        (stat.S_ISFIFO, "a FIFO (named pipe)"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return name
    return "a special file"


def open_regular(path: str | os.PathLike, what: str = "file") -> BinaryIO:
    """``path`` opened for binary reading when it is a regular file; anything else is refused without blocking.

    The check is made on the opened descriptor (docs/extraction.md, "Image files"), so a file swapped for
    a FIFO between a check and the open cannot block; O_NONBLOCK makes opening a FIFO itself return at once.
    ``what`` names the file in messages ("image", "jobs file").
    """
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise ImageFileError(f"{path}: cannot read the {what}: no such file") from None
    except IsADirectoryError:
        raise ImageFileError(f"{path}: is a folder: expected a regular file") from None
    except PermissionError:
        raise ImageFileError(f"{path}: cannot read the {what}: permission denied") from None
    except (OSError, ValueError) as e:  # ValueError: a NUL byte in the name
        raise ImageFileError(f"{path}: cannot read the {what}: {getattr(e, 'strerror', None) or e}") from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise ImageFileError(f"{path}: is {_kind(mode)}: expected a regular file")
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_regular(path: str | os.PathLike, what: str = "file") -> bytes:
    """The bytes of a regular file (see :func:`open_regular`; docs/extraction.md, "Image files")."""
    with open_regular(path, what) as f:
        try:
            return f.read()
        except OSError as e:
            raise ImageFileError(f"{path}: cannot read the {what}: {e.strerror or e}") from None


def _pillow():
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError as e:  # pillow is in requirements.txt; say so rather than fail obscurely
        raise ImageFileError("reading images needs Pillow (pip install pillow)") from e
    return Image, UnidentifiedImageError


def _orientation(im: PILImage.Image) -> int | None:
    """The Transpose that EXIF orientation asks for (None: none, or an unreadable EXIF block)."""
    try:
        return _TRANSPOSE.get(im.getexif().get(_ORIENTATION))
    except (OSError, ValueError, SyntaxError, KeyError, TypeError, IndexError) as e:
        log.debug("ignoring an unreadable EXIF block: %s", e)
        return None


def _decode(source: BinaryIO, name: str, target: int | None, convert: bool) -> np.ndarray | None:
    """Open and decode (reduced for ``target``); with ``convert``, the pixels as float RGB."""
    Image, UnidentifiedImageError = _pillow()
    keep = None if target is None else REDUCING_GAP * int(target)
    try:
        with warnings.catch_warnings():
            if keep is not None:  # decoded reduced, a large image costs what a small one does
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(source) as im:
                if im.width * im.height <= REDUCE_ABOVE:
                    keep = None
                transpose = _orientation(im) if convert else None
                if keep is not None:
                    im.draft(None, (keep, keep))  # JPEG: scale by 1/2, 1/4 or 1/8 while decoding
                im.load()
                if not convert:
                    return None
                return _to_float_rgb(im, keep, transpose)
    except UnidentifiedImageError:
        raise ImageFileError(f"{name}: not an image (expected {IMAGE_KINDS})") from None
    except Image.DecompressionBombError as e:
        raise ImageFileError(f"{name}: too large to read safely: {e}") from None
    except MemoryError:
        raise ImageFileError(f"{name}: too large to decode in the memory available") from None
    except (OSError, ValueError, SyntaxError, EOFError) as e:  # truncated or corrupt files surface as any of these
        raise ImageFileError(f"{name}: cannot read the image: {e}") from None


def _to_float_rgb(im: PILImage.Image, keep: int | None, transpose: int | None) -> np.ndarray:
    import numpy as np

    if im.mode in _SIXTEEN_BIT:
        im, scale = im.convert("F"), 65535.0
    else:
        scale = 1.0 if im.mode == "F" else 255.0
    if keep is not None:
        fx, fy = max(1, im.width // keep), max(1, im.height // keep)
        if fx > 1 or fy > 1:
            if im.mode not in ("L", "RGB", "F"):  # as the full-size path: alpha dropped, then averaged
                im = im.convert("L" if im.mode == "LA" else "RGB")
            im = im.reduce((fx, fy))  # a grey image is reduced as 1 byte per pixel, before any RGB copy
    if im.mode not in ("RGB", "F"):
        im = im.convert("RGB")
    if transpose is not None:
        im = im.transpose(transpose)
    pixels = np.array(im, dtype=np.float32)
    pixels /= np.float32(scale)  # float32(k) / float32(255): exactly ComfyUI's loader for 8-bit images
    if im.mode == "F":
        np.clip(pixels, 0.0, 1.0, out=pixels)
        pixels = np.repeat(pixels[:, :, None], 3, axis=2)
    return pixels


def read_image(path: str | os.PathLike, target: int | None = None) -> np.ndarray:
    """An image file as ``[H, W, 3]`` float32 sRGB in [0, 1] (docs/extraction.md, "Image files").

    EXIF rotation is applied and alpha dropped. With ``target`` (the side the caller resamples to), an
    image of more than ``REDUCE_ABOVE`` pixels is decoded reduced, keeping ``REDUCING_GAP * target`` or
    more pixels per side.
    """
    with open_regular(path, "image") as f:
        return _decode(f, str(path), target, convert=True)


def check_image(path: str | os.PathLike) -> bytes:
    """The file's bytes once Pillow has decoded the image in them whole (docs/batch.md, "Jobs file")."""
    import io

    data = read_regular(path, "image")
    _decode(io.BytesIO(data), str(path), 32, convert=False)  # a JPEG's 1/8 scale still reads every block
    return data
