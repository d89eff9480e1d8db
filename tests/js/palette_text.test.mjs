// Unit tests of web/palette_text.js (the palette widget's pure logic). Run: node --test tests/js/
import assert from "node:assert/strict";
import { describe, test } from "node:test";

import {
  addColor,
  entriesOf,
  formatPalette,
  MAX_COLORS,
  moveColor,
  normalizedWeights,
  normalizeHex,
  PaletteTextError,
  parsePalette,
  parseWeight,
  removeColor,
  setColor,
  setWeight,
} from "../../web/palette_text.js";

const SPEC_EXAMPLE = "#e63946:2, #f1faee, #1d3557:0.5";

function hexes(text) {
  return entriesOf(text).map((e) => e.hex);
}

function weights(text) {
  return entriesOf(text).map((e) => e.weight);
}

describe("parsePalette", () => {
  test("the design reference's example: colours, relative weights, 1 where none is written", () => {
    const p = parsePalette(SPEC_EXAMPLE);
    assert.equal(p.kind, "list");
    assert.equal(p.error, null);
    assert.deepEqual(p.entries, [
      { hex: "#e63946", weight: 2 },
      { hex: "#f1faee", weight: 1 },
      { hex: "#1d3557", weight: 0.5 },
    ]);
  });

  test("every hex form and separator (commas, semicolons, spaces, tabs, new lines)", () => {
    assert.deepEqual(hexes("#FFF;e63946\n#a1B\t000000 ,, #123456"), [
      "#ffffff",
      "#e63946",
      "#aa11bb",
      "#000000",
      "#123456",
    ]);
  });

  test("Python's whitespace separates too (U+001C, U+0085, U+3000) but U+FEFF does not", () => {
    assert.deepEqual(hexes("#111111\u001c#222222\u0085#333333\u3000#444444"), [
      "#111111",
      "#222222",
      "#333333",
      "#444444",
    ]);
    assert.match(parsePalette("#111111\ufeff#222222").error, /is not a colour/);
  });

  test("weight forms: integers, decimals, leading dot, trailing dot, plus sign, exponents", () => {
    assert.deepEqual(weights("#000:2, #111:0.25, #222:.5, #333:3., #444:+1, #555:1e-3, #666:2E2"), [
      2, 0.25, 0.5, 3, 1, 0.001, 200,
    ]);
  });

  test("JSON lists and Coolors URLs are recognised and left to the server", () => {
    assert.deepEqual(parsePalette('["#e63946", "#f1faee"]'), { kind: "json", entries: null, error: null });
    assert.equal(parsePalette('  {"hex": "#fff"}').kind, "json");
    for (const url of [
      "https://coolors.co/264653-2a9d8f-e9c46a",
      "coolors.co/palette/264653-2a9d8f",
      "HTTP://WWW.Coolors.co/264653-2a9d8f/?ref=x",
    ]) {
      assert.equal(parsePalette(url).kind, "coolors", url);
    }
  });

  const errors = [
    ["", /the palette is empty/],
    ["   \n ", /the palette is empty/],
    [",, ;", /no colours given/],
    ["#12345", /"#12345" is not a colour: expected #RGB, #RRGGBB or RRGGBB/],
    ["fff", /"fff" is not a colour/],
    ["#ggg", /"#ggg" is not a colour/],
    ["#fff:", /"#fff:": missing weight after ":"/],
    ["#fff:abc", /weight "abc" is not a number/],
    ["#fff:-1", /weight -1 must be >= 0/],
    ["#fff:-0", /weight -0 must be >= 0/],
    ["#fff:nan", /is not a number/],
    ["#fff:1_0", /is not a number/],
    ["#fff:1e999", /weight 1e999 is too large: weights must be finite/],
    ["#fff:0, #000:0", /the weights sum to 0/],
    ["#fff:2:3", /weight "2:3" is not a number/],
    ["https://example.com/264653", /is not a colour/],
  ];
  for (const [text, pattern] of errors) {
    test(`error for ${JSON.stringify(text)} names the problem`, () => {
      const p = parsePalette(text);
      assert.equal(p.entries, null);
      assert.match(p.error, pattern);
    });
  }

  test("the first bad token is the one named, even among many", () => {
    assert.match(parsePalette("#111, #222, oops, #zzz").error, /^"oops" is not a colour/);
  });

  test("long tokens are shortened in messages", () => {
    const p = parsePalette("x".repeat(100));
    assert.match(p.error, /^"x{37}\.\.\." is not a colour/);
  });

  test(`at most ${MAX_COLORS} colours`, () => {
    const many = (n) => Array.from({ length: n }, (_, i) => `#${i.toString(16).padStart(6, "0")}`).join(" ");
    assert.equal(parsePalette(many(MAX_COLORS)).entries.length, MAX_COLORS);
    assert.match(parsePalette(many(MAX_COLORS + 1)).error, /more than 256 colours/);
  });

  test("a non-string is an error, not an exception", () => {
    assert.match(parsePalette(undefined).error, /must be a string/);
  });
});

describe("formatPalette and round trips", () => {
  test("canonical text: lower-case #rrggbb, ', ' separators, weight 1 left out", () => {
    assert.equal(formatPalette(entriesOf("#E63946:2\n#FFF:1.0 1d3557:.5")), "#e63946:2, #ffffff, #1d3557:0.5");
  });

  test("text -> swatches -> text -> swatches is stable", () => {
    for (const text of [SPEC_EXAMPLE, "#abc", "#000:1e-7 #fff:12345678901234567890", "#123:0, #456:3"]) {
      const once = formatPalette(entriesOf(text));
      assert.deepEqual(entriesOf(once), entriesOf(text), text);
      assert.equal(formatPalette(entriesOf(once)), once, text);
    }
  });

  test("random palettes survive the round trip exactly", () => {
    let seed = 12345;
    const rand = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
    for (let round = 0; round < 200; round++) {
      const n = 1 + Math.floor(rand() * 12);
      const entries = Array.from({ length: n }, () => ({
        hex: `#${Math.floor(rand() * 2 ** 24).toString(16).padStart(6, "0")}`,
        weight: rand() < 0.3 ? 1 : rand() * 10 ** Math.floor(rand() * 8 - 4),
      }));
      entries[0].weight = Math.max(entries[0].weight, 1e-3);
      assert.deepEqual(entriesOf(formatPalette(entries)), entries);
    }
  });

  test("normalised weights sum to 1 and follow the relative weights; huge weights do not overflow", () => {
    const w = normalizedWeights(entriesOf(SPEC_EXAMPLE));
    assert.deepEqual(
      w.map((x) => x.toFixed(6)),
      [2 / 3.5, 1 / 3.5, 0.5 / 3.5].map((x) => x.toFixed(6)),
    );
    const big = normalizedWeights(entriesOf("#000:1e308, #fff:1e308"));
    assert.deepEqual(big, [0.5, 0.5]);
    assert.deepEqual(normalizedWeights(entriesOf("#000:0, #fff:3")), [0, 1]);
  });

  test("formatting refuses an empty palette or one whose weights sum to 0", () => {
    assert.throws(() => formatPalette([]), PaletteTextError);
    assert.throws(() => formatPalette([{ hex: "#000000", weight: 0 }]), /weights sum to 0/);
  });
});

describe("edits return new text", () => {
  test("add at the end (weight 1) or at a position with a weight", () => {
    assert.equal(addColor(SPEC_EXAMPLE, "#ABC"), "#e63946:2, #f1faee, #1d3557:0.5, #aabbcc");
    assert.equal(addColor("#000", "ffffff", { index: 0, weight: 3 }), "#ffffff:3, #000000");
    assert.throws(() => addColor("#000", "#12"), /"#12" is not a colour/);
    assert.throws(() => addColor("#000", "#fff", { index: 5 }), /cannot insert at 5/);
  });

  test("add refuses a 257th colour", () => {
    const full = Array.from({ length: MAX_COLORS }, () => "#000000").join(", ");
    assert.throws(() => addColor(full, "#fff"), /already has 256 colours/);
  });

  test("remove a colour; never the last one", () => {
    assert.equal(removeColor(SPEC_EXAMPLE, 1), "#e63946:2, #1d3557:0.5");
    assert.throws(() => removeColor("#000", 0), /at least one colour/);
    assert.throws(() => removeColor(SPEC_EXAMPLE, 3), /no colour number 3/);
  });

  test("removing the only positive weight is refused with the reason", () => {
    assert.throws(() => removeColor("#000:0, #fff:2", 1), /weights sum to 0/);
  });

  test("move (drag to reorder) forwards and backwards, weights travel with their colour", () => {
    assert.equal(moveColor(SPEC_EXAMPLE, 0, 2), "#f1faee, #1d3557:0.5, #e63946:2");
    assert.equal(moveColor(SPEC_EXAMPLE, 2, 0), "#1d3557:0.5, #e63946:2, #f1faee");
    assert.equal(moveColor(SPEC_EXAMPLE, 1, 1), formatPalette(entriesOf(SPEC_EXAMPLE)));
    assert.throws(() => moveColor(SPEC_EXAMPLE, 0, 3), PaletteTextError);
  });

  test("set colour keeps the weight", () => {
    assert.equal(setColor(SPEC_EXAMPLE, 0, "#00FF00"), "#00ff00:2, #f1faee, #1d3557:0.5");
  });

  test("set weight from a number or typed text; 1 disappears from the text", () => {
    assert.equal(setWeight(SPEC_EXAMPLE, 1, 4), "#e63946:2, #f1faee:4, #1d3557:0.5");
    assert.equal(setWeight(SPEC_EXAMPLE, 0, "1"), "#e63946, #f1faee, #1d3557:0.5");
    assert.equal(setWeight(SPEC_EXAMPLE, 2, "0"), "#e63946:2, #f1faee, #1d3557:0");
    assert.throws(() => setWeight(SPEC_EXAMPLE, 0, -1), /must be finite and >= 0/);
    assert.throws(() => setWeight(SPEC_EXAMPLE, 0, "lots"), /is not a number/);
    assert.throws(() => setWeight("#000", 0, 0), /weights sum to 0/);
  });

  test("edits on text the widget cannot read locally ask for normalising first", () => {
    assert.throws(() => addColor("https://coolors.co/264653-2a9d8f", "#fff"), /read by the server/);
    assert.throws(() => removeColor("#000, oops", 0), /"oops" is not a colour/);
  });
});

describe("small parsers", () => {
  test("normalizeHex", () => {
    assert.equal(normalizeHex("#AbC"), "#aabbcc");
    assert.equal(normalizeHex(" 123456 "), "#123456");
    assert.throws(() => normalizeHex("abc"), /expected #RGB, #RRGGBB or RRGGBB/);
  });

  test("parseWeight", () => {
    assert.equal(parseWeight(" 2.5 "), 2.5);
    assert.throws(() => parseWeight("Infinity"), /is not a number/);
    assert.throws(() => parseWeight("-3"), /must be >= 0/);
  });
});
