"""The example photos the templates name reach ComfyUI's input folder when the pack loads, never over a user's file."""

from __future__ import annotations

import json
from pathlib import Path

from packimport import pack_module

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "example_workflows" / "input"

examples = pack_module("nodes.example_inputs")


def test_copies_every_image_the_templates_name(tmp_path):
    written = examples.copy_example_inputs(tmp_path / "input")
    named = set()
    for api in (REPO / "example_workflows" / "api").glob("*.api.json"):
        for node in json.loads(api.read_text()).values():
            if node["class_type"] == "LoadImage":
                named.add(node["inputs"]["image"])
    assert named, "no template loads an image: the test would prove nothing"
    assert named <= {p.name for p in written}
    for p in written:
        assert p.read_bytes() == (SHIPPED / p.name).read_bytes()
    assert not list((tmp_path / "input").glob(".*partial"))


def test_never_overwrites_and_a_rerun_writes_nothing(tmp_path):
    dest = tmp_path / "input"
    dest.mkdir()
    mine = dest / "palette_example_coffee.jpg"
    mine.write_bytes(b"the user's own file")
    first = examples.copy_example_inputs(dest)
    assert mine.read_bytes() == b"the user's own file"
    assert mine not in first and first
    assert examples.copy_example_inputs(dest) == []


def test_a_failed_copy_is_logged_not_raised(tmp_path, caplog):
    blocker = tmp_path / "input"
    blocker.write_text("a file where the input folder should be")
    assert examples.copy_example_inputs(blocker) == []
    assert "could not copy the example image" in caplog.text
    assert blocker.read_text() == "a file where the input folder should be"
