"""scikit-image's bundled sample photographs for the tests (never downloaded): the one loader they share."""

from __future__ import annotations

import functools

import numpy as np
import pytest
from PIL import Image


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
