"""scikit-image's bundled sample photographs for the tests and benchmarks (never downloaded): the one loader they
share, and the palettes the recolouring test and benchmark apply to them."""

from __future__ import annotations

import functools

import numpy as np
import pytest
from PIL import Image

# What the recolouring test and benchmark pair: designer palettes as typed from Coolors (five colours each;
# the last one weighted) on these photos.
DESIGNER_PALETTES = {
    "ocean-sunset": "#264653, #2a9d8f, #e9c46a, #f4a261, #e76f51",
    "americana": "#e63946, #f1faee, #a8dadc, #457b9d, #1d3557",
    "olive-earth": "#606c38, #283618, #fefae0, #dda15e, #bc6c25",
    "pastel": "#cdb4db, #ffc8dd, #ffafcc, #bde0fe, #a2d2ff",
    "neon": "#ff006e:2, #fb5607, #ffbe0b, #8338ec:2, #3a86ff",
}
RECOLOR_PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "motorcycle", "hubble_deep_field")


@functools.cache
def _bundled(name: str) -> np.ndarray | None:
    data = pytest.importorskip("skimage.data")
    try:
        arr = data.stereo_motorcycle()[0] if name == "motorcycle" else getattr(data, name)()
    except (ImportError, OSError, ValueError):  # a scikit-image that would have to download it
        return None
    return np.ascontiguousarray(arr[..., :3])


def sample_photo(name: str, size: int | None = None) -> np.ndarray | None:
    """The photo as uint8 ``[H, W, 3]``, its longer side resized (bicubic) to ``size``; None if not offline.

    Skips the test where scikit-image is not installed; ``motorcycle`` is the left view of the stereo pair.
    """
    arr = _bundled(name)
    if arr is None or size is None:
        return arr
    img = Image.fromarray(arr)
    scale = size / max(img.size)
    return np.array(img.resize((round(img.width * scale), round(img.height * scale)), Image.BICUBIC))


def photo_or_skip(name: str, size: int | None = None) -> np.ndarray:
    """:func:`sample_photo`, skipping the test where the photo is not available offline."""
    arr = sample_photo(name, size)
    if arr is None:
        pytest.skip(f"scikit-image sample photo {name!r} is not available offline")
    return arr


def photo_tensor(name: str, size: int | None = None):
    """:func:`photo_or_skip` as a float32 tensor ``[H, W, 3]`` of 8-bit levels in [0, 1], as ComfyUI loads images."""
    import torch

    return torch.from_numpy(photo_or_skip(name, size).astype(np.float32) / 255.0)
