// Palette picker for ComfyUI (frontend 1.27): a row of swatches under a palette text widget.
//
// The node's value stays the docs/design.md §5 text in the existing STRING widget: the swatches are a view of that
// text and every edit writes new text into it. So saved workflows, API prompts and users without this
// extension all carry the same plain text. The swatch widget itself is never serialised.
//
// Text the widget cannot read itself (JSON lists, Coolors URLs) and palette files (.gpl .pal .ase .aco
// .hex .txt .json) go to the pack's route POST /palette_control/parse, which parses them with
// palette_core and answers with the canonical hex-list text. See docs/widget.md.

import { api } from "../../scripts/api.js";
import { app } from "../../scripts/app.js";
import {
  addColor,
  entriesOf,
  formatPalette,
  formatWeight,
  moveColor,
  normalizedWeights,
  PaletteTextError,
  parsePalette,
  removeColor,
  setColor,
  setWeight,
} from "./palette_text.js";

/** Node types and their inputs that hold palette text. NegativePalette takes a PALETTE link, no text. */
export const PALETTE_TEXT_INPUTS = { PaletteInput: ["palette"] };
export const ROUTE = "/palette_control/parse";
export const MAX_UPLOAD_BYTES = 10_000_000;
const FILE_TYPES = ".gpl,.pal,.ase,.aco,.hex,.txt,.json";
const WIDGET_HEIGHT = 92;
const DRAG_THRESHOLD_PX = 4;

const STYLE = `
.pc-palette { display: flex; flex-direction: column; gap: 4px; box-sizing: border-box; outline: none;
  font: 11px sans-serif; color: var(--input-text, #ddd); }
.pc-palette:focus-visible .pc-strip { box-shadow: 0 0 0 1px var(--p-primary-color, #6cf); }
.pc-strip { display: flex; height: 34px; flex: 0 0 34px; gap: 2px; align-items: stretch; }
.pc-swatches { display: flex; flex: 1 1 auto; min-width: 0; gap: 1px; border-radius: 4px; overflow: hidden;
  background: var(--comfy-input-bg, #222); }
.pc-swatch { position: relative; flex-basis: 0; flex-shrink: 1; min-width: 8px; cursor: pointer;
  touch-action: none; user-select: none; display: flex; align-items: flex-end; }
.pc-swatch.pc-zero { background-image: repeating-linear-gradient(45deg, transparent 0 3px, #8888 3px 5px); }
.pc-swatch.pc-selected { outline: 2px solid var(--p-primary-color, #6cf); outline-offset: -2px; z-index: 1; }
.pc-swatch.pc-dragging { opacity: 0.6; }
.pc-swatch .pc-label { padding: 0 3px 1px; font-size: 10px; pointer-events: none; white-space: nowrap; }
.pc-drop { flex: 0 0 3px; min-width: 3px; background: var(--p-primary-color, #6cf); }
.pc-bar { display: flex; gap: 4px; align-items: center; height: 22px; flex: 0 0 22px; }
.pc-bar button, .pc-add { background: var(--comfy-input-bg, #222); color: var(--input-text, #ddd);
  border: 1px solid var(--border-color, #444); border-radius: 4px; height: 22px; padding: 0 6px;
  cursor: pointer; font: 11px sans-serif; }
.pc-add { height: auto; width: 26px; font-size: 16px; padding: 0; }
.pc-bar button:disabled { opacity: 0.4; cursor: default; }
.pc-bar input[type=color] { width: 26px; height: 22px; padding: 0; border: 1px solid var(--border-color, #444);
  border-radius: 4px; background: none; cursor: pointer; }
.pc-bar input[type=number] { width: 52px; height: 20px; background: var(--comfy-input-bg, #222);
  color: var(--input-text, #ddd); border: 1px solid var(--border-color, #444); border-radius: 4px; }
.pc-bar .pc-hex { font-family: monospace; min-width: 52px; }
.pc-spacer { flex: 1; }
.pc-hint { color: var(--descrip-text, #999); white-space: nowrap; overflow: hidden; text-overflow: ellipsis; }
.pc-palette [hidden] { display: none; }
.pc-message { height: 14px; flex: 0 0 14px; overflow: hidden; white-space: nowrap; text-overflow: ellipsis;
  color: var(--descrip-text, #999); }
.pc-message.pc-error { color: var(--error-text, #f66); }
`;

function el(tag, props = {}, children = []) {
  const node = Object.assign(document.createElement(tag), props);
  for (const c of children) node.append(c);
  return node;
}

/** Black or white, whichever reads better on `hex` (for weight labels). */
function inkFor(hex) {
  const [r, g, b] = [1, 3, 5].map((i) => parseInt(hex.slice(i, i + 2), 16) / 255);
  return 0.2126 * r + 0.7152 * g + 0.0722 * b > 0.55 ? "#000" : "#fff";
}

/** POST to the pack's route; resolves to the reply's JSON or throws an Error carrying the server's message. */
async function postParse(body, filename) {
  const query = filename === undefined ? "" : `?filename=${encodeURIComponent(filename)}`;
  const headers = { "Content-Type": filename === undefined ? "application/json" : "application/octet-stream" };
  const res = await api.fetchApi(`${ROUTE}${query}`, { method: "POST", headers, body });
  let reply;
  try {
    reply = await res.json();
  } catch {
    throw new Error(`the palette route answered ${res.status} without JSON: is the palette-control pack loaded?`);
  }
  if (!res.ok) throw new Error(reply.error ?? `the palette route answered ${res.status}`);
  return reply;
}

class PaletteSwatches {
  constructor(node, textWidget) {
    this.node = node;
    this.textWidget = textWidget;
    this.text = null; // the widget text the swatches show
    this.canonical = null; // that palette as hex-list text (what edits operate on)
    this.entries = null;
    this.selected = -1;
    this.serverSeq = 0;
    this.build();
    this.widget = node.addDOMWidget(`${textWidget.name}_swatches`, "palette_swatches", this.root, {
      serialize: false, // never in the API prompt: the text widget carries the value
      hideOnZoom: true,
      getValue: () => this.textWidget.value,
      setValue: () => {}, // a view only; loading a workflow restores the text widget
      getMinHeight: () => WIDGET_HEIGHT,
      getMaxHeight: () => WIDGET_HEIGHT,
      onDraw: () => {
        // When the palette input is fed by a link, the text is not used: grey the swatches out with it.
        const linked = Boolean(this.textWidget.computedDisabled);
        if (linked !== Boolean(this.widget.computedDisabled)) {
          this.widget.disabled = this.widget.computedDisabled = linked;
          this.node.setDirtyCanvas?.(true, false);
        }
        this.sync();
      },
    });
    this.widget.serialize = false; // never in the workflow's widgets_values either
    const previous = textWidget.callback;
    textWidget.callback = function (...args) {
      const result = previous?.apply(this, args);
      node.paletteSwatches?.[textWidget.name]?.sync();
      return result;
    };
    this.sync();
  }

  build() {
    this.swatches = el("div", { className: "pc-swatches" });
    this.addButton = el("button", { className: "pc-add", textContent: "+", title: "Add a colour" });
    this.colorInput = el("input", { type: "color", title: "Colour of the selected swatch" });
    this.hexLabel = el("span", { className: "pc-hex" });
    this.weightInput = el("input", {
      type: "number",
      min: "0",
      step: "0.1",
      title: "Relative weight of the selected colour (swatch width)",
    });
    this.leftButton = el("button", { textContent: "◀", title: "Move the selected colour left" });
    this.rightButton = el("button", { textContent: "▶", title: "Move the selected colour right" });
    this.removeButton = el("button", { textContent: "✕", title: "Remove the selected colour" });
    this.importButton = el("button", {
      textContent: "Import…",
      title: "Read a palette file (.gpl .pal .ase .aco .hex .txt .json)",
    });
    this.pasteButton = el("button", {
      textContent: "Paste",
      title: "Paste palette text: hex list, JSON list or Coolors URL (or press Ctrl+V over the swatches)",
    });
    this.fileInput = el("input", { type: "file", accept: FILE_TYPES, hidden: true });
    this.message = el("div", { className: "pc-message" });
    this.hint = el("span", { className: "pc-hint", textContent: "click a swatch to edit it, drag to reorder" });
    this.editor = [this.colorInput, this.hexLabel, this.weightInput, this.leftButton, this.rightButton];
    this.root = el("div", { className: "pc-palette", tabIndex: 0 }, [
      el("div", { className: "pc-strip" }, [this.swatches, this.addButton]),
      el("div", { className: "pc-bar" }, [
        this.hint,
        ...this.editor,
        this.removeButton,
        el("span", { className: "pc-spacer" }),
        this.importButton,
        this.pasteButton,
        this.fileInput,
      ]),
      this.message,
    ]);

    this.addButton.addEventListener("click", () => this.addColour());
    // Live while the chooser is open; one undo step when it closes.
    const recolour = (commit) => this.edit((t) => setColor(t, this.selected, this.colorInput.value), undefined, commit);
    this.colorInput.addEventListener("input", () => recolour(false));
    this.colorInput.addEventListener("change", () => recolour(true));
    this.weightInput.addEventListener("change", () =>
      this.edit((t) => setWeight(t, this.selected, this.weightInput.value)),
    );
    this.leftButton.addEventListener("click", () => this.moveSelected(-1));
    this.rightButton.addEventListener("click", () => this.moveSelected(1));
    this.removeButton.addEventListener("click", () => this.edit((t) => removeColor(t, this.selected), -1));
    this.importButton.addEventListener("click", () => this.fileInput.click());
    this.fileInput.addEventListener("change", () => this.importFile(this.fileInput.files?.[0]));
    this.pasteButton.addEventListener("click", () => this.pasteFromClipboard());
    this.root.addEventListener("paste", (e) => this.onPaste(e));
    this.root.addEventListener("keydown", (e) => this.onKey(e));
    this.swatches.addEventListener("pointerdown", (e) => this.onPointerDown(e));
  }

  // ---- text -> swatches ----------------------------------------------------------------------------

  /** Show the text widget's current value (cheap when unchanged; called on every edit and redraw). */
  sync() {
    const text = String(this.textWidget.value ?? "");
    if (text === this.text) return;
    this.text = text;
    const parsed = parsePalette(text);
    if (parsed.entries) {
      this.show(parsed.entries, formatPalette(parsed.entries));
    } else if (parsed.error) {
      this.show(null, null, parsed.error);
    } else {
      this.normaliseOnServer(text);
    }
  }

  async normaliseOnServer(text) {
    const seq = ++this.serverSeq;
    this.setMessage(`Reading the ${kindName(text)}…`);
    try {
      const reply = await postParse(JSON.stringify({ text }));
      if (seq !== this.serverSeq || text !== this.text) return; // the text changed meanwhile
      this.show(entriesOf(reply.text), reply.text);
    } catch (e) {
      if (seq !== this.serverSeq || text !== this.text) return;
      this.show(null, null, e.message);
    }
  }

  show(entries, canonical, error = null) {
    this.entries = entries;
    this.canonical = canonical;
    if (!entries || this.selected >= entries.length) this.selected = -1;
    this.render();
    if (error) this.setMessage(error, true);
    else if (entries) this.setMessage(`${entries.length} colour${entries.length === 1 ? "" : "s"}`);
  }

  setMessage(text, isError = false) {
    this.message.textContent = text;
    this.message.title = text;
    this.message.classList.toggle("pc-error", isError);
  }

  render() {
    const entries = this.entries ?? [];
    const widths = entries.length ? normalizedWeights(entries) : [];
    const uniform = entries.every((e) => e.weight === entries[0].weight);
    const minWidth = entries.length > 48 ? 2 : 8;
    this.swatches.replaceChildren(
      ...entries.map((e, i) => {
        const share = (widths[i] * 100).toFixed(1);
        const swatch = el("div", {
          className: `pc-swatch${i === this.selected ? " pc-selected" : ""}${e.weight === 0 ? " pc-zero" : ""}`,
          title: `${e.hex}  weight ${formatWeight(e.weight)} (${share}%)\nclick: colour · drag: reorder`,
        });
        swatch.dataset.index = String(i);
        swatch.style.background = e.hex;
        swatch.style.flexGrow = String(widths[i]);
        swatch.style.minWidth = `${minWidth}px`;
        if (!uniform) {
          swatch.append(el("span", { className: "pc-label", textContent: formatWeight(e.weight) }));
          swatch.style.color = inkFor(e.hex);
        }
        return swatch;
      }),
    );
    const sel = this.selected >= 0 ? entries[this.selected] : null;
    for (const control of [...this.editor, this.removeButton]) {
      control.disabled = !sel;
      control.hidden = !sel;
    }
    this.hint.hidden = Boolean(sel) || !entries.length;
    this.removeButton.disabled = !sel || entries.length < 2;
    this.leftButton.disabled = !sel || this.selected === 0;
    this.rightButton.disabled = !sel || this.selected === entries.length - 1;
    this.addButton.disabled = !this.canonical;
    this.colorInput.value = sel ? sel.hex : "#000000";
    this.hexLabel.textContent = sel ? sel.hex : "";
    if (document.activeElement !== this.weightInput) this.weightInput.value = sel ? formatWeight(sel.weight) : "";
  }

  // ---- swatches -> text ----------------------------------------------------------------------------

  /** Apply `fn(canonicalText) -> newText` and store the result in the text widget; errors show inline. */
  edit(fn, select = this.selected, commit = true) {
    if (!this.canonical) return;
    let next;
    try {
      next = fn(this.canonical);
    } catch (e) {
      if (!(e instanceof PaletteTextError)) throw e;
      this.setMessage(e.message, true);
      return;
    }
    this.selected = select;
    this.setText(next, commit);
  }

  /** Store `text` as the node's value; `commit` records an undo step (the workflow is then modified). */
  setText(text, commit = true) {
    this.textWidget.value = text; // the setter runs the widget's callback, which re-syncs the swatches
    this.sync();
    this.node.setDirtyCanvas?.(true, true);
    if (commit) app.extensionManager?.workflow?.activeWorkflow?.changeTracker?.checkState?.();
  }

  addColour() {
    const entries = this.entries ?? [];
    const at = this.selected >= 0 ? this.selected + 1 : entries.length;
    // A new swatch starts as a copy of its neighbour so the picker opens near the palette's colours.
    const hex = entries[at - 1]?.hex ?? "#808080";
    this.edit((t) => addColor(t, hex, { index: at }), at);
    if (this.selected === at) this.openPicker();
  }

  moveSelected(step) {
    const to = this.selected + step;
    this.edit((t) => moveColor(t, this.selected, to), to);
  }

  openPicker() {
    try {
      this.colorInput.showPicker?.();
    } catch {
      // showPicker needs a user gesture; the colour field beside the weight still works.
    }
  }

  // ---- pointer: click a swatch to pick its colour, drag it to reorder ------------------------------

  onPointerDown(e) {
    const swatch = e.target.closest?.(".pc-swatch");
    if (!swatch || e.button !== 0) return;
    e.preventDefault();
    e.stopPropagation();
    const from = Number(swatch.dataset.index);
    const startX = e.clientX;
    let dragging = false;
    let target = from;
    this.swatches.setPointerCapture?.(e.pointerId);
    const move = (ev) => {
      if (!dragging && Math.abs(ev.clientX - startX) < DRAG_THRESHOLD_PX) return;
      dragging = true;
      swatch.classList.add("pc-dragging");
      target = this.dropIndex(ev.clientX, from);
      this.showDropMarker(target, from);
    };
    const up = (ev) => {
      this.swatches.removeEventListener("pointermove", move);
      this.swatches.removeEventListener("pointerup", up);
      this.swatches.removeEventListener("pointercancel", up);
      this.swatches.releasePointerCapture?.(ev.pointerId);
      if (!dragging) {
        this.selected = from;
        this.render();
        this.root.focus({ preventScroll: true });
        this.openPicker();
      } else if (ev.type === "pointerup" && target !== from) {
        this.edit((t) => moveColor(t, from, target), target);
      } else {
        this.render();
      }
    };
    this.swatches.addEventListener("pointermove", move);
    this.swatches.addEventListener("pointerup", up);
    this.swatches.addEventListener("pointercancel", up);
  }

  /** The index the dragged swatch lands on when dropped at clientX (swatch centres as boundaries). */
  dropIndex(clientX, from) {
    const boxes = [...this.swatches.querySelectorAll(".pc-swatch")].map((s) => s.getBoundingClientRect());
    let index = boxes.filter((b) => clientX > b.left + b.width / 2).length; // insertion point 0..n
    if (index > from) index -= 1; // the dragged swatch leaves its own slot
    return Math.max(0, Math.min(boxes.length - 1, index));
  }

  showDropMarker(target, from) {
    this.swatches.querySelector(".pc-drop")?.remove();
    if (target === from) return;
    const swatches = this.swatches.querySelectorAll(".pc-swatch");
    const marker = el("div", { className: "pc-drop" });
    if (target > from) swatches[target].after(marker);
    else swatches[target].before(marker);
  }

  onKey(e) {
    if (e.target !== this.root || this.selected < 0) return;
    if (e.key === "Delete" || e.key === "Backspace") {
      this.edit((t) => removeColor(t, this.selected), -1);
    } else if (e.altKey && (e.key === "ArrowLeft" || e.key === "ArrowRight")) {
      this.moveSelected(e.key === "ArrowLeft" ? -1 : 1);
    } else {
      return;
    }
    e.preventDefault();
    e.stopPropagation();
  }

  // ---- paste and import ----------------------------------------------------------------------------

  onPaste(e) {
    if (e.target instanceof HTMLInputElement) return; // typing a weight: ordinary paste
    const text = e.clipboardData?.getData("text/plain") ?? "";
    e.preventDefault();
    e.stopPropagation();
    this.importText(text);
  }

  async pasteFromClipboard() {
    if (!navigator.clipboard?.readText) {
      this.setMessage("The clipboard cannot be read here: click the swatches and press Ctrl+V", true);
      return;
    }
    try {
      this.importText(await navigator.clipboard.readText());
    } catch (e) {
      this.setMessage(`Cannot read the clipboard (${e.message}): click the swatches and press Ctrl+V`, true);
    }
  }

  /** Replace the palette with pasted text of any docs/design.md §5 form; on error the text stays as it was. */
  async importText(text) {
    const parsed = parsePalette(text);
    if (parsed.entries) {
      this.setText(formatPalette(parsed.entries));
      return;
    }
    if (parsed.error) {
      this.setMessage(`Pasted text: ${parsed.error}`, true);
      return;
    }
    this.setMessage(`Reading the ${kindName(text)}…`);
    try {
      this.setText((await postParse(JSON.stringify({ text }))).text);
    } catch (e) {
      this.setMessage(`Pasted text: ${e.message}`, true);
    }
  }

  async importFile(file) {
    this.fileInput.value = ""; // choosing the same file again fires change again
    if (!file) return;
    if (file.size > MAX_UPLOAD_BYTES) {
      this.setMessage(`${file.name}: ${file.size} bytes; palette files are limited to 10 MB`, true);
      return;
    }
    this.setMessage(`Reading ${file.name}…`);
    try {
      const reply = await postParse(file, file.name);
      this.setText(reply.text);
      this.setMessage(`${reply.count} colour${reply.count === 1 ? "" : "s"} from ${file.name}`);
    } catch (e) {
      this.setMessage(e.message, true);
    }
  }
}

function kindName(text) {
  return parsePalette(text).kind === "json" ? "JSON palette" : "Coolors URL";
}

app.registerExtension({
  name: "palette_control.palette_widget",
  init() {
    if (!document.getElementById("palette-control-style")) {
      document.head.append(el("style", { id: "palette-control-style", textContent: STYLE }));
    }
  },
  nodeCreated(node) {
    const inputs = PALETTE_TEXT_INPUTS[node.comfyClass];
    if (!inputs) return;
    node.paletteSwatches = {};
    for (const name of inputs) {
      const textWidget = node.widgets?.find((w) => w.name === name);
      if (!textWidget) continue;
      node.paletteSwatches[name] = new PaletteSwatches(node, textWidget);
    }
    const [w, h] = node.computeSize();
    node.setSize([Math.max(node.size[0], w), Math.max(node.size[1], h)]);
  },
});
