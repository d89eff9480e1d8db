"""The optional ``progress(done, total)`` callback of the long palette_core loops (docs/recolor.md).

What a host relies on: one call per unit of work in order, ``total`` fixed and right, the result the same
as without a callback (and whatever the slice size), and an exception raised by the callback (a cancel)
stopping the loop right there, before any later image's work.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from palette_core import recolor as rc
from palette_core.extract import extract_palettes
from palette_core.palette import Palette

PALETTE = Palette.parse("#264653, #2a9d8f, #e9c46a:2, #f4a261, #e76f51")


class Cancelled(Exception):
    """Stands in for a host's interruption exception."""


def smooth_images(batch: int, height: int, width: int, seed: int = 0) -> torch.Tensor:
    """A batch of smooth random colour fields ``[B, H, W, 3]`` (many distinct colours, like photos)."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(batch, 3, 5, 4, generator=g)
    fine = torch.nn.functional.interpolate(coarse, size=(height, width), mode="bilinear", align_corners=False)
    return fine.permute(0, 2, 3, 1).contiguous()


class Recorder:
    """A progress callback that records its calls and raises ``Cancelled`` on call number ``stop_at``."""

    def __init__(self, stop_at: int | None = None) -> None:
        self.calls: list[tuple[int, int]] = []
        self.stop_at = stop_at

    def __call__(self, done: int, total: int) -> None:
        self.calls.append((done, total))
        if len(self.calls) == self.stop_at:
            raise Cancelled


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@settings(max_examples=8, deadline=None)
@given(
    batch=st.integers(1, 3),
    height=st.integers(4, 16),
    width=st.integers(4, 16),
    chunk=st.sampled_from([13, 64, 1 << 18]),
    masked=st.booleans(),
)
def test_recolor_and_lock_report_every_slice_and_keep_their_result(batch, height, width, chunk, masked):
    x = smooth_images(batch, height, width)
    mask = None
    if masked:  # soft edges, and (in a batch) an empty region whose slices are copied and still counted
        mask = torch.ones(batch, height, width)
        mask[-1, : height // 2] = 0.25
        if batch > 1:
            mask[0] = 0.0
    whole = rc.recolor(x, PALETTE.colors, PALETTE.weights, mask=mask)
    original = rc._PIXEL_CHUNK
    rc._PIXEL_CHUNK = chunk
    try:
        plain = rc.recolor(x, PALETTE.colors, PALETTE.weights, mask=mask)
        lock_plain = rc.lightness_lock(x.flip(0), x, mask=mask)
        seen, seen_lock = Recorder(), Recorder()
        out = rc.recolor(x, PALETTE.colors, PALETTE.weights, mask=mask, progress=seen)
        lock = rc.lightness_lock(x.flip(0), x, mask=mask, progress=seen_lock)
    finally:
        rc._PIXEL_CHUNK = original
    total = batch * math.ceil(height * width / chunk)
    assert seen.calls == [(k, total) for k in range(1, total + 1)]
    assert seen_lock.calls == [(k, total) for k in range(1, total + 1)]
    # The callback only watches: the same bits as without it.
    assert torch.equal(out, plain) and torch.equal(lock, lock_plain)
    # Pixels are independent, so the slice size changes nothing but the vector kernels' last bits.
    assert torch.allclose(out, whole, rtol=0.0, atol=1e-5)


def test_a_cancel_stops_recolor_before_the_next_image_is_touched(monkeypatch):
    x = smooth_images(5, 20, 16)
    extracted = []
    extract = rc.source_palette
    monkeypatch.setattr(rc, "source_palette", lambda image, *a: extracted.append(1) or extract(image, *a))
    stop = Recorder(stop_at=2)
    with pytest.raises(Cancelled):
        rc.recolor(x, PALETTE.colors, PALETTE.weights, progress=stop)
    # One slice per image: cancelled after the second image, whose palette was the last one extracted.
    assert stop.calls == [(1, 5), (2, 5)] and len(extracted) == 2
    extracted.clear()
    rc.recolor(x, PALETTE.colors, PALETTE.weights)
    assert len(extracted) == 5


def test_a_cancel_stops_the_lock_and_a_large_image_reports_as_it_goes():
    x = smooth_images(1, 600, 500)  # 300000 pixels: two slices of at most 2^18
    stop = Recorder(stop_at=1)
    with pytest.raises(Cancelled):
        rc.lightness_lock(x.flip(2), x, progress=stop)
    assert stop.calls == [(1, 2)]


def test_extract_palettes_reports_each_image_and_stops_on_a_cancel():
    x = smooth_images(4, 24, 20)
    seen = Recorder()
    pals = extract_palettes(x, 3, progress=seen)
    assert seen.calls == [(1, 4), (2, 4), (3, 4), (4, 4)]
    again = extract_palettes(x, 3)
    assert all(torch.equal(a.colors, b.colors) and torch.equal(a.weights, b.weights) for a, b in zip(pals, again))
    mask = torch.ones(4, 24, 20)
    seen = Recorder()
    extract_palettes(x, 3, mask=mask, progress=seen)
    assert [d for d, _ in seen.calls] == [1, 2, 3, 4]
    stop = Recorder(stop_at=3)
    with pytest.raises(Cancelled):
        extract_palettes(x, 3, method="median_cut", progress=stop)
    assert len(stop.calls) == 3
