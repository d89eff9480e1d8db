// Real-browser test of the palette widget: headless Chromium (playwright-core) against the real ComfyUI
// frontend of a running ComfyUI with this pack installed.
//
//   COMFY_URL=http://127.0.0.1:8188 node --test tests/browser/palette_widget.browser.mjs
//
// tests/test_widget_browser.py starts ComfyUI (tests/comfyserver.py) and runs this file; see docs/widget.md.
// Environment: COMFY_URL (required), CHROMIUM (default /usr/bin/chromium; CHROMIUM_PATH is still read), SCREENSHOT_DIR (where
// the PNGs go, default: not written), RESULT_FILE (JSON with what the server ran, for the Python side).
import assert from "node:assert/strict";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, test } from "node:test";

import { chromium } from "playwright-core";

const URL = process.env.COMFY_URL;
const SCREENSHOT_DIR = process.env.SCREENSHOT_DIR;
const GPL = "GIMP Palette\nName: Sunset\nColumns: 3\n#\n38  70  83\tdeep\n42 157 143 teal\n233 196 106\n";
const COOLORS = "https://coolors.co/264653-2a9d8f-e9c46a-f4a261-e76f51";
const COOLORS_TEXT = "#264653, #2a9d8f, #e9c46a, #f4a261, #e76f51";

let browser;
let page;
const ids = {};
const pageErrors = [];

const palette = () => page.locator(".pc-palette").first();
const swatches = () => palette().locator(".pc-swatch");
const textarea = () => page.locator("textarea.comfy-multiline-input").first();
const message = () => palette().locator(".pc-message");

/** The palette text the node holds (the STRING widget's value, what is saved and queued). */
const nodeText = () => page.evaluate((id) => app.graph.getNodeById(id).widgets[0].value, ids.palette);

async function swatchInfo() {
  return swatches().evaluateAll((els) =>
    els.map((e) => ({ color: getComputedStyle(e).backgroundColor, width: e.getBoundingClientRect().width })),
  );
}

/** Click swatch `i`: it is selected and the widget asks the browser for its colour chooser. */
async function selectSwatch(i) {
  const opened = await page.evaluate(() => window.pickerRequests);
  await swatches().nth(i).click();
  await palette().locator(".pc-swatch.pc-selected").waitFor();
  assert.equal(await page.evaluate(() => window.pickerRequests), opened + 1, "the colour chooser was opened");
  assert.equal(await palette().locator(".pc-swatch.pc-selected").getAttribute("data-index"), String(i));
}

const rgb = (hex) => `rgb(${[1, 3, 5].map((i) => parseInt(hex.slice(i, i + 2), 16)).join(", ")})`;

async function expectText(expected) {
  await page.waitForFunction(
    ([id, t]) => app.graph.getNodeById(id).widgets[0].value === t,
    [ids.palette, expected],
    { timeout: 10_000 },
  ).catch(() => {});
  assert.equal(await nodeText(), expected);
  assert.equal(await textarea().inputValue(), expected, "the text box shows the same text");
}

async function expectSwatches(hexes) {
  await page.waitForFunction(
    (n) => document.querySelectorAll(".pc-palette .pc-swatch").length === n,
    hexes.length,
    { timeout: 10_000 },
  ).catch(() => {});
  assert.deepEqual(
    (await swatchInfo()).map((s) => s.color),
    hexes.map(rgb),
  );
}

async function shot(name, clip, scale = "device") {
  if (!SCREENSHOT_DIR) return;
  await page.screenshot({ path: join(SCREENSHOT_DIR, name), clip, scale });
}

/** The node's box on the page (canvas coordinates -> client pixels), with a margin. */
async function nodeClip(id, margin = 16) {
  return page.evaluate(
    ([id, margin]) => {
      const node = app.graph.getNodeById(id);
      const [x, y] = app.canvas.ds.convertOffsetToCanvas([node.pos[0], node.pos[1] - LiteGraph.NODE_TITLE_HEIGHT]);
      const rect = app.canvas.canvas.getBoundingClientRect();
      const s = app.canvas.ds.scale;
      return {
        x: rect.left + x - margin,
        y: rect.top + y - margin,
        width: node.size[0] * s + 2 * margin,
        height: (node.size[1] + LiteGraph.NODE_TITLE_HEIGHT) * s + 2 * margin,
      };
    },
    [id, margin],
  );
}

before(async () => {
  assert.ok(URL, "set COMFY_URL to a running ComfyUI with the palette-control pack");
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || process.env.CHROMIUM_PATH || "/usr/bin/chromium",
    args: ["--no-sandbox"],
  });
  const context = await browser.newContext({ viewport: { width: 1280, height: 720 }, deviceScaleFactor: 2 });
  await context.grantPermissions(["clipboard-read", "clipboard-write"], { origin: URL });
  // A native colour chooser would take the next key press; record the request instead of opening it.
  await context.addInitScript(() => {
    window.pickerRequests = 0;
    HTMLInputElement.prototype.showPicker = function () {
      if (this.type === "color") window.pickerRequests += 1;
    };
  });
  page = await context.newPage();
  page.on("pageerror", (e) => pageErrors.push(`${e.message}\n${e.stack ?? ""}`));
  await page.goto(URL);
  await page.waitForFunction(() => window.app?.graph && window.LiteGraph && app.extensions?.length, null, {
    timeout: 180_000,
  });
  await page.waitForTimeout(500);
  if (await page.locator(".p-dialog").count()) await page.keyboard.press("Escape"); // first-run templates
});

after(async () => {
  await browser?.close();
});

test("the pack's extension is loaded from /extensions", async () => {
  const names = await page.evaluate(() => app.extensions.map((e) => e.name));
  assert.ok(names.includes("palette_control.palette_widget"), names.join(", "));
});

test("a PaletteInput node gets swatches below its text, showing the default palette", async () => {
  Object.assign(
    ids,
    await page.evaluate(() => {
      app.graph.clear();
      const add = (type, pos, size) => {
        const node = LiteGraph.createNode(type);
        node.pos = pos;
        app.graph.add(node);
        if (size) node.setSize(size);
        return node;
      };
      const input = add("PaletteInput", [20, 60], [400, 270]);
      const preview = add("PalettePreview", [470, 100], [200, 60]);
      const image = add("PreviewImage", [720, 60], [400, 270]);
      input.connect(0, preview, 0);
      preview.connect(0, image, 0);
      app.canvas.ds.scale = 1;
      app.canvas.ds.offset = [40, 40];
      app.canvas.setDirty(true, true);
      return { palette: input.id, preview: preview.id, image: image.id };
    }),
  );
  await expectSwatches(["#e63946", "#f1faee", "#a8dadc", "#457b9d", "#1d3557"]);
  assert.equal(await message().textContent(), "5 colours");
  const widths = (await swatchInfo()).map((s) => s.width);
  assert.ok(Math.abs(widths[0] / widths[1] - 2) < 0.1, `weight 2 is twice as wide: ${widths}`);
});

test("typing in the text box updates the swatches", async () => {
  await textarea().fill("#264653, #2a9d8f");
  await expectSwatches(["#264653", "#2a9d8f"]);
  await textarea().fill("#264653, #2a9d8f, oops");
  await palette().locator(".pc-message.pc-error").waitFor();
  assert.match(await message().textContent(), /"oops" is not a colour/);
  assert.equal(await swatches().count(), 0);
  await textarea().fill("#264653, #2a9d8f");
  await expectSwatches(["#264653", "#2a9d8f"]);
});

test("add a colour with +, then change it with the colour picker", async () => {
  await palette().locator(".pc-add").click();
  await expectText("#264653, #2a9d8f, #2a9d8f");
  await selectSwatch(2);
  assert.equal(await palette().locator(".pc-hex").textContent(), "#2a9d8f");
  await palette().locator("input[type=color]").fill("#e9c46a");
  await expectText("#264653, #2a9d8f, #e9c46a");
  await expectSwatches(["#264653", "#2a9d8f", "#e9c46a"]);
});

test("a weight changes the text and the swatch width", async () => {
  await selectSwatch(2);
  const weight = palette().locator("input[type=number]");
  await weight.fill("3");
  await weight.press("Enter");
  await expectText("#264653, #2a9d8f, #e9c46a:3");
  const widths = (await swatchInfo()).map((s) => s.width);
  assert.ok(Math.abs(widths[2] / widths[0] - 3) < 0.1, `weight 3 is three times as wide: ${widths}`);
});

test("drag a swatch to reorder; its weight travels with it", async () => {
  const from = await swatches().nth(2).boundingBox();
  const to = await swatches().nth(0).boundingBox();
  await page.mouse.move(from.x + from.width / 2, from.y + from.height / 2);
  await page.mouse.down();
  await page.mouse.move(to.x + 4, to.y + to.height / 2, { steps: 8 });
  await page.mouse.up();
  await expectText("#e9c46a:3, #264653, #2a9d8f");
  await expectSwatches(["#e9c46a", "#264653", "#2a9d8f"]);
});

test("remove the selected colour with ✕", async () => {
  await selectSwatch(1);
  await palette().getByTitle("Remove the selected colour").click();
  await expectText("#e9c46a:3, #2a9d8f");
});

test("each edit is one undo step of the workflow (Ctrl+Z / Ctrl+Y)", async () => {
  const tracker = () => "app.extensionManager.workflow.activeWorkflow.changeTracker";
  await page.evaluate(`${tracker()}.undo()`);
  await expectText("#e9c46a:3, #264653, #2a9d8f");
  await expectSwatches(["#e9c46a", "#264653", "#2a9d8f"]);
  await page.evaluate(`${tracker()}.redo()`);
  await expectText("#e9c46a:3, #2a9d8f");
  await expectSwatches(["#e9c46a", "#2a9d8f"]);
});

test("paste a Coolors URL (read by the server route) over the swatches", async () => {
  await palette().evaluate((el, text) => {
    const data = new DataTransfer();
    data.setData("text/plain", text);
    el.dispatchEvent(new ClipboardEvent("paste", { clipboardData: data, bubbles: true, cancelable: true }));
  }, COOLORS);
  await expectText(COOLORS_TEXT);
  await expectSwatches(["#264653", "#2a9d8f", "#e9c46a", "#f4a261", "#e76f51"]);
});

test("the Paste button reads the clipboard (JSON list with weights)", async () => {
  await page.evaluate(() => navigator.clipboard.writeText('[{"hex": "#ff0000", "weight": 2}, "#0000ff"]'));
  await palette().getByRole("button", { name: "Paste" }).click();
  await expectText("#ff0000:2, #0000ff");
});

test("bad pasted text shows the parser's error and leaves the palette alone", async () => {
  await palette().evaluate((el) => {
    const data = new DataTransfer();
    data.setData("text/plain", "https://coolors.co/264653-zzzzzz");
    el.dispatchEvent(new ClipboardEvent("paste", { clipboardData: data, bubbles: true, cancelable: true }));
  });
  await palette().locator(".pc-message.pc-error").waitFor();
  assert.match(await message().textContent(), /"zzzzzz" is not a colour/);
  assert.equal(await nodeText(), "#ff0000:2, #0000ff");
});

test("import a .gpl file through the widget's file input (parsed by palette_core on the server)", async () => {
  const file = palette().locator("input[type=file]");
  await file.setInputFiles({ name: "sunset.gpl", mimeType: "application/octet-stream", buffer: Buffer.from(GPL) });
  await expectText("#264653, #2a9d8f, #e9c46a");
  await expectSwatches(["#264653", "#2a9d8f", "#e9c46a"]);
  assert.equal(await message().textContent(), "3 colours from sunset.gpl");
  await file.setInputFiles({ name: "broken.gpl", mimeType: "text/plain", buffer: Buffer.from("GIMP Palette\n1 2\n") });
  await palette().locator(".pc-message.pc-error").waitFor();
  assert.match(await message().textContent(), /^broken\.gpl: line 2: "1 2" is not a colour row/);
  assert.equal(await nodeText(), "#264653, #2a9d8f, #e9c46a");
});

test("JSON typed into the text box stays as typed; the swatches come from the server", async () => {
  const json = '["#111111", {"hex": "#eeeeee", "weight": 4}]';
  await textarea().fill(json);
  await expectSwatches(["#111111", "#eeeeee"]);
  assert.equal(await nodeText(), json);
  await palette().locator(".pc-add").click(); // an edit rewrites it as the hex list
  await expectText("#111111, #eeeeee:4, #eeeeee");
});

test("saved workflow and API prompt carry only the plain text; loading it back restores the swatches", async () => {
  await textarea().fill("#264653, #2a9d8f:2, #e9c46a");
  await expectSwatches(["#264653", "#2a9d8f", "#e9c46a"]);
  const saved = await page.evaluate(() => app.graph.serialize());
  const node = saved.nodes.find((n) => n.id === ids.palette);
  assert.deepEqual(node.widgets_values, ["#264653, #2a9d8f:2, #e9c46a"]);
  const prompt = await page.evaluate(async () => (await app.graphToPrompt()).output);
  assert.deepEqual(prompt[String(ids.palette)].inputs, { palette: "#264653, #2a9d8f:2, #e9c46a" });

  node.widgets_values = ["#000000, #ffffff:3"];
  await page.evaluate(async (wf) => app.loadGraphData(wf), saved);
  await expectSwatches(["#000000", "#ffffff"]);
  const widths = (await swatchInfo()).map((s) => s.width);
  assert.ok(Math.abs(widths[1] / widths[0] - 3) < 0.1, `loaded weights: ${widths}`);
  await page.evaluate(
    ([id, off]) => {
      app.canvas.ds.offset = off;
      app.canvas.setDirty(true, true);
    },
    [ids.palette, [40, 40]],
  );
});

test("a link into the palette input greys the swatches out, like the text box", async () => {
  const wrapperStyle = () =>
    palette().evaluate((el) => {
      const box = el.closest(".dom-widget");
      return [box.style.pointerEvents, box.style.opacity];
    });
  const primitive = await page.evaluate((id) => {
    const node = app.graph.getNodeById(id);
    const source = LiteGraph.createNode("PrimitiveString");
    source.pos = [20, 400];
    app.graph.add(source);
    source.connect(0, node, node.findInputSlot("palette"));
    app.canvas.setDirty(true, true);
    return source.id;
  }, ids.palette);
  await page.waitForFunction(() => document.querySelector(".pc-palette").closest(".dom-widget").style.opacity === "0.5");
  assert.deepEqual(await wrapperStyle(), ["none", "0.5"]);
  await page.evaluate((id) => {
    app.graph.remove(app.graph.getNodeById(id));
    app.canvas.setDirty(true, true);
  }, primitive);
  await page.waitForFunction(() => document.querySelector(".pc-palette").closest(".dom-widget").style.opacity === "1");
  assert.deepEqual(await wrapperStyle(), ["auto", "1"]);
});

test("queue it: PaletteInput -> PalettePreview -> PreviewImage runs on the server", async () => {
  await textarea().fill("");
  await palette().evaluate((el) => {
    const data = new DataTransfer();
    data.setData("text/plain", "#e63946:2, #f1faee, #a8dadc, #457b9d, #1d3557");
    el.dispatchEvent(new ClipboardEvent("paste", { clipboardData: data, bubbles: true, cancelable: true }));
  });
  const text = "#e63946:2, #f1faee, #a8dadc, #457b9d, #1d3557";
  await expectText(text);
  const before = Object.keys(await (await fetch(`${URL}/history`)).json());
  await page.evaluate(() => app.queuePrompt(0, 1));
  let entry;
  let promptId;
  for (let i = 0; i < 120 && !entry; i++) {
    await page.waitForTimeout(500);
    const history = await (await fetch(`${URL}/history`)).json();
    promptId = Object.keys(history).find((k) => !before.includes(k) && history[k].status?.completed !== undefined);
    entry = promptId && history[promptId];
  }
  assert.ok(entry, "the prompt finished within a minute");
  assert.equal(entry.status.status_str, "success", JSON.stringify(entry.status));
  assert.equal(entry.prompt[2][String(ids.palette)].inputs.palette, text);
  const images = entry.outputs[String(ids.image)]?.images;
  assert.equal(images?.length, 1, JSON.stringify(entry.outputs));
  if (process.env.RESULT_FILE) {
    writeFileSync(process.env.RESULT_FILE, JSON.stringify({ prompt_id: promptId, text, image: images[0] }));
  }
  // The frontend shows the executed image in the PreviewImage node.
  await page.waitForFunction(
    (id) => {
      app.canvas.setDirty(true, true); // images load while the node is drawn
      return app.graph.getNodeById(id).imgs?.[0]?.naturalWidth > 0;
    },
    ids.image,
    { timeout: 30_000, polling: 250 },
  );
  await page.mouse.click(640, 560); // an empty spot of the canvas: nothing selected
  await page.waitForTimeout(300);
  const first = await nodeClip(ids.palette, 24);
  const last = await nodeClip(ids.image, 24);
  const top = Math.min(first.y, last.y);
  const bottom = Math.max(first.y + first.height, last.y + last.height);
  await shot("palette_graph.png", { x: first.x, y: top, width: last.x + last.width - first.x, height: bottom - top }, "css");
  await selectSwatch(0);
  await page.waitForTimeout(300);
  await shot("palette_widget.png", await nodeClip(ids.palette));
});

test("no uncaught errors in the page", () => {
  // Frontend 1.27.10 itself throws once while registering its settings, with or without this pack.
  const unrelated = (e) => e.includes("at Proxy.addSetting");
  assert.deepEqual(pageErrors.filter((e) => !unrelated(e)), []);
});
