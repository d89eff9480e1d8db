"""The palette widget's JavaScript (web/palette_text.js) under Node: its own unit tests, and agreement with
palette_core's parser (the one the nodes use) on random palette text.

Skipped when ``node`` is not on PATH. Run the JS tests alone with ``node --test tests/js/``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from palette_core.errors import PaletteError
from palette_core.palette import Palette

REPO = Path(__file__).resolve().parents[1]
NODE = shutil.which("node")
pytestmark = pytest.mark.skipif(NODE is None, reason="needs Node.js (node) on PATH for the widget's JS tests")

JS_TESTS = sorted((REPO / "tests" / "js").glob("*.test.mjs"))
MODULE_URL = (REPO / "web" / "palette_text.js").as_uri()

# Reads a JSON list of texts on stdin; prints, for each, how the widget reads it and the text it writes back.
PARSE_SCRIPT = f"""
import {{ parsePalette, formatPalette, normalizedWeights }} from {json.dumps(MODULE_URL)};
let input = "";
for await (const chunk of process.stdin) input += chunk;
const out = JSON.parse(input).map((text) => {{
  const p = parsePalette(text);
  if (!p.entries) return {{ kind: p.kind, error: p.error }};
  return {{
    kind: p.kind,
    hex: p.entries.map((e) => e.hex),
    weights: normalizedWeights(p.entries),
    formatted: formatPalette(p.entries),
  }};
}});
process.stdout.write(JSON.stringify(out));
"""


def js_parse(texts: list[str]) -> list[dict]:
    run = subprocess.run(
        [NODE, "--input-type=module", "-e", PARSE_SCRIPT],
        input=json.dumps(texts),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout)


def py_parse(text: str) -> Palette | str:
    try:
        return Palette.parse(text)
    except PaletteError as e:
        return str(e)


def test_node_unit_tests_pass():
    assert JS_TESTS, "no tests/js/*.test.mjs found"
    run = subprocess.run(
        [NODE, "--test", *map(str, JS_TESTS)], cwd=REPO, capture_output=True, text=True, timeout=120, check=False
    )
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    assert "# fail 0" in run.stdout and "# pass 0" not in run.stdout


def assert_same_reading(texts: list[str]) -> None:
    """The widget and palette_core accept the same hex-list texts with the same colours and weights."""
    for text, js in zip(texts, js_parse(texts), strict=True):
        if js["kind"] != "list":
            assert js["kind"] in ("json", "coolors")
            continue
        py = py_parse(text)
        if isinstance(py, str):
            assert "error" in js, f"{text!r}: Python rejects it ({py}) but the widget reads {js}"
            continue
        assert "error" not in js, f"{text!r}: Python reads {py} but the widget says: {js['error']}"
        assert js["hex"] == py.hex, text
        assert js["weights"] == pytest.approx(py.weights.tolist(), abs=1e-6), text
        again = Palette.parse(js["formatted"])
        assert again.hex == py.hex and torch.equal(again.weights, py.weights), (text, js["formatted"])


def test_examples_agree_with_palette_core():
    assert_same_reading(
        [
            "#e63946:2, #f1faee, #1d3557:0.5",
            "#FFF;e63946\n#a1B\t000000",
            "#111111\u001c#222222\u0085#333333\u3000#444444",
            "#111111\ufeff#222222",
            "#fff:.5 #000:3. #abc:+1e2",
            "#fff:-0",
            "fff",
            "#fff:0, #000:0",
            "#fff:1e999",
            ",,,",
            "",
            "https://coolors.co/264653-2a9d8f",
            '["#fff"]',
            "#000:1e308 #fff:1e308",
            "#000:1e-320 #fff:0",
        ]
    )


HEX_DIGITS = "0123456789abcdefABCDEF"
SEPARATORS = [",", ", ", ";", " ", "\n", "\t", "\u001c", "\u0085", "\u3000", "\ufeff", ",,", ""]
colour = st.one_of(
    st.text(HEX_DIGITS, min_size=6, max_size=6).map(lambda s: "#" + s),
    st.text(HEX_DIGITS, min_size=3, max_size=3).map(lambda s: "#" + s),
    st.text(HEX_DIGITS, min_size=6, max_size=6),
    st.text(HEX_DIGITS + "#xg", min_size=0, max_size=8),
)
weight = st.one_of(
    st.just(""),
    st.floats(0, 1e6, allow_nan=False).map(lambda w: f":{w!r}"),
    st.integers(0, 100).map(lambda w: f":{w}"),
    st.text("0123456789.eE+-_", min_size=0, max_size=6).map(lambda s: ":" + s),
)
token = st.tuples(colour, weight).map("".join)
palette_text = st.lists(st.tuples(token, st.sampled_from(SEPARATORS)), min_size=0, max_size=8).map(
    lambda parts: "".join(t + s for t, s in parts)
)


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.lists(st.one_of(palette_text, st.text(max_size=20)), min_size=60, max_size=60))
def test_random_text_agrees_with_palette_core(texts):
    assert_same_reading(texts)
