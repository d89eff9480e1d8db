"""Shared fixtures. The pack's ``nodes/`` is never imported as a top-level ``nodes`` here (ComfyUI owns that name)."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "tests" / "data"


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The tests' reference data (``tests/data``, sources in its README)."""
    return DATA


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module of small images (``pytestmark = pytest.mark.usefixtures("one_thread")``):
    on a loaded 2-core runner OpenMP's overhead makes them up to 10x slower with two."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def photos(request) -> dict:
    """The module's ``PHOTOS`` (scikit-image sample photos) at its ``PHOTO_SIZE``, as float32 ``[H, W, 3]``
    tensors of 8-bit levels; skips where one is not available offline."""
    from sample_photos import photo_tensor

    return {name: photo_tensor(name, request.module.PHOTO_SIZE) for name in request.module.PHOTOS}


@pytest.fixture(params=["numpy", "compiled"])
def both_paths(request, monkeypatch):
    """Runs a test on the numpy paths and on the compiled kernels (numba, optional: docs/craft.md)."""
    if request.param == "numpy":
        monkeypatch.setenv("PALETTE_NO_JIT", "1")
    else:
        pytest.importorskip("numba")
        monkeypatch.delenv("PALETTE_NO_JIT", raising=False)
    return request.param
