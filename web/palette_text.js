// The palette widget's pure logic: the docs/design.md §5 text form <-> a list of swatches, and the edits the
// widget makes (add, remove, move, recolour, reweight), each returning new text. No DOM, no ComfyUI:
// tests/js/ runs it under Node.
//
// Only the hex-list form ("#e63946:2, #f1faee, #1d3557") is parsed here, with the same rules as
// palette_core.palette.Palette.parse (tests/test_widget_js.py checks the two agree on random text).
// JSON lists and Coolors URLs are recognised but left to the server route, which parses them with the
// pack's one Python parser and answers with the canonical hex-list text (see docs/widget.md).

export const MAX_COLORS = 256;
export const MAX_TEXT_CHARS = 1_000_000;
export const EXPECTED_COLOUR = "expected #RGB, #RRGGBB or RRGGBB";

// Python's \s for str patterns (JS's \s differs: it has U+FEFF and lacks U+001C-U+001F and U+0085).
const WS = "\\t\\n\\v\\f\\r\\x1c-\\x20\\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000";
const SEPARATORS = new RegExp(`[${WS},;]+`);
const EDGE_WS = new RegExp(`^[${WS}]+|[${WS}]+$`, "g");
const HEX_RE = /^#?(?:[0-9a-fA-F]{6}|[0-9a-fA-F]{3})$/;
const WEIGHT_RE = /^[+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?$/;
const COOLORS_RE = new RegExp(
  `^(?:https?://)?(?:www\\.)?coolors\\.co/(?:palette/)?[^/?#${WS}]*/?(?:[?#][^${WS}]*)?$`,
  "i",
);
const QUOTE_CHARS = 40;

/** An edit or a text that the palette cannot take; `message` says what is wrong and what to do. */
export class PaletteTextError extends Error {
  constructor(message) {
    super(message);
    this.name = "PaletteTextError";
  }
}

/** `token` in double quotes for an error message, shortened when long (as palette_core's quote()). */
export function quote(token) {
  const chars = [...token];
  const t = chars.length <= QUOTE_CHARS ? token : chars.slice(0, QUOTE_CHARS - 3).join("") + "...";
  return `"${t.replace(/[\u0000-\u001f\u007f-\u009f]/g, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, "0")}`)}"`;
}

/** One hex colour token (#RGB, #RRGGBB or RRGGBB) to canonical "#rrggbb"; throws PaletteTextError. */
export function normalizeHex(token) {
  const t = String(token).replace(EDGE_WS, "");
  if (!HEX_RE.test(t) || (t.length === 3 && !t.startsWith("#"))) {
    throw new PaletteTextError(`${quote(String(token))} is not a colour: ${EXPECTED_COLOUR}`);
  }
  let digits = t.replace(/^#/, "").toLowerCase();
  if (digits.length === 3) digits = [...digits].map((c) => c + c).join("");
  return `#${digits}`;
}

/** A weight as typed ("2", "0.5", "1e-3") to a number: finite and >= 0; throws PaletteTextError. */
export function parseWeight(text, token = text) {
  const s = String(text).replace(EDGE_WS, "");
  if (s.startsWith("-") && WEIGHT_RE.test(s.slice(1))) {
    throw new PaletteTextError(`${quote(token)}: weight ${s} must be >= 0`);
  }
  if (!WEIGHT_RE.test(s)) {
    throw new PaletteTextError(
      `${quote(token)}: weight ${quote(s)} is not a number: expected colour:weight, e.g. #e63946:2`,
    );
  }
  const w = Number(s);
  if (!Number.isFinite(w)) {
    throw new PaletteTextError(`${quote(token)}: weight ${s} is too large: weights must be finite`);
  }
  return w;
}

function checkEntries(entries) {
  if (entries.length === 0) {
    throw new PaletteTextError(`no colours given: a palette holds 1 to ${MAX_COLORS} colours`);
  }
  if (entries.length > MAX_COLORS) {
    throw new PaletteTextError(`${entries.length} colours: a palette holds 1 to ${MAX_COLORS}`);
  }
  if (!entries.some((e) => e.weight > 0)) {
    throw new PaletteTextError("the weights sum to 0: at least one colour needs a positive weight");
  }
  return entries;
}

/**
 * Read palette text. Returns one of
 *   {kind: "list", entries: [{hex: "#rrggbb", weight}], error: null}   parsed here;
 *   {kind: "list", entries: null, error: "message"}                     not a valid palette;
 *   {kind: "json" | "coolors", entries: null, error: null}              ask the server route.
 * Weights are the relative weights as written (1 when not given).
 */
export function parsePalette(text) {
  if (typeof text !== "string") {
    return { kind: "list", entries: null, error: `palette text must be a string, got ${typeof text}` };
  }
  // Counted in code points, as Python's len() does (only long texts need the slower count).
  const chars = text.length > MAX_TEXT_CHARS ? [...text].length : text.length;
  if (chars > MAX_TEXT_CHARS) {
    return {
      kind: "list",
      entries: null,
      error: `palette text has ${chars} characters; the limit is ${MAX_TEXT_CHARS}`,
    };
  }
  const s = text.replace(EDGE_WS, "");
  if (!s) {
    return {
      kind: "list",
      entries: null,
      error: "the palette is empty: enter colours such as #e63946, #f1faee, #1d3557",
    };
  }
  if (s.startsWith("[") || s.startsWith("{")) return { kind: "json", entries: null, error: null };
  if (COOLORS_RE.test(s)) return { kind: "coolors", entries: null, error: null };
  const entries = [];
  try {
    for (const token of s.split(SEPARATORS)) {
      if (!token) continue;
      const at = token.indexOf(":");
      const colour = at < 0 ? token : token.slice(0, at);
      const hex = normalizeHex(colour);
      let weight = 1;
      if (at >= 0) {
        const w = token.slice(at + 1);
        if (!w) {
          throw new PaletteTextError(
            `${quote(token)}: missing weight after ":": expected colour:weight, e.g. #e63946:2`,
          );
        }
        weight = parseWeight(w, token);
      }
      entries.push({ hex, weight });
      if (entries.length > MAX_COLORS) {
        throw new PaletteTextError(`more than ${MAX_COLORS} colours: a palette holds 1 to ${MAX_COLORS}`);
      }
    }
    checkEntries(entries);
  } catch (e) {
    if (e instanceof PaletteTextError) return { kind: "list", entries: null, error: e.message };
    throw e;
  }
  return { kind: "list", entries, error: null };
}

/** Shortest text that reads back as the same number ("2", "0.5", "1e-7"). */
export function formatWeight(w) {
  return String(w).replace("e+", "e");
}

/** Swatches back to the hex-list text form; a weight of 1 is left out ("#e63946:2, #f1faee"). */
export function formatPalette(entries) {
  checkEntries(entries);
  return entries.map((e) => (e.weight === 1 ? e.hex : `${e.hex}:${formatWeight(e.weight)}`)).join(", ");
}

/** The weights scaled to sum to 1 (swatch widths); computed from the largest so huge weights cannot overflow. */
export function normalizedWeights(entries) {
  const top = Math.max(...entries.map((e) => e.weight));
  if (!(top > 0)) return entries.map(() => 1 / entries.length);
  const scaled = entries.map((e) => e.weight / top);
  const total = scaled.reduce((a, b) => a + b, 0);
  return scaled.map((w) => w / total);
}

/** The swatches of hex-list text; throws PaletteTextError for invalid text or a form only the server reads. */
export function entriesOf(text) {
  const parsed = parsePalette(text);
  if (parsed.error) throw new PaletteTextError(parsed.error);
  if (!parsed.entries) {
    throw new PaletteTextError(`${parsed.kind} palettes are read by the server: normalise the text first`);
  }
  return parsed.entries;
}

function checkIndex(entries, index, what) {
  if (!Number.isInteger(index) || index < 0 || index >= entries.length) {
    throw new PaletteTextError(`${what}: no colour number ${index} in a palette of ${entries.length}`);
  }
}

/** Insert `hex` (weight 1 unless given) at `index` (default: the end). */
export function addColor(text, hex, { index, weight = 1 } = {}) {
  const entries = entriesOf(text);
  if (entries.length >= MAX_COLORS) {
    throw new PaletteTextError(`the palette already has ${MAX_COLORS} colours, the most it can hold`);
  }
  const at = index ?? entries.length;
  if (!Number.isInteger(at) || at < 0 || at > entries.length) {
    throw new PaletteTextError(`add: cannot insert at ${at} in a palette of ${entries.length}`);
  }
  const w = typeof weight === "number" ? weight : parseWeight(weight);
  if (!(w >= 0) || !Number.isFinite(w)) throw new PaletteTextError(`weight ${w} must be finite and >= 0`);
  const next = [...entries];
  next.splice(at, 0, { hex: normalizeHex(hex), weight: w });
  return formatPalette(next);
}

/** Remove colour `index`; the last colour cannot be removed (a palette holds at least one). */
export function removeColor(text, index) {
  const entries = entriesOf(text);
  checkIndex(entries, index, "remove");
  if (entries.length === 1) throw new PaletteTextError("a palette needs at least one colour");
  const next = entries.filter((_, i) => i !== index);
  return formatPalette(next);
}

/** Move colour `from` to position `to` (the others keep their order). */
export function moveColor(text, from, to) {
  const entries = entriesOf(text);
  checkIndex(entries, from, "move");
  checkIndex(entries, to, "move");
  const next = [...entries];
  const [item] = next.splice(from, 1);
  next.splice(to, 0, item);
  return formatPalette(next);
}

/** Give colour `index` a new colour (any hex form), keeping its weight. */
export function setColor(text, index, hex) {
  const entries = entriesOf(text);
  checkIndex(entries, index, "set colour");
  const next = entries.map((e, i) => (i === index ? { ...e, hex: normalizeHex(hex) } : e));
  return formatPalette(next);
}

/** Give colour `index` a new relative weight (number or text such as "0.5"); at least one must stay > 0. */
export function setWeight(text, index, weight) {
  const entries = entriesOf(text);
  checkIndex(entries, index, "set weight");
  const w = typeof weight === "number" ? weight : parseWeight(weight);
  if (!Number.isFinite(w) || w < 0) throw new PaletteTextError(`weight ${w} must be finite and >= 0`);
  const next = entries.map((e, i) => (i === index ? { ...e, weight: w } : e));
  return formatPalette(next);
}
