// Load example workflows into the real ComfyUI frontend (headless Chromium) and, per workflow, write
//   <out>/<name>.png          a screenshot of the graph's first group (the pack's nodes), else the whole graph
//   <out>/<name>.prompt.json  the frontend's own API form of the loaded graph (app.graphToPrompt)
// and <out>/report.json: {name: {missing: [node types the frontend does not know], errors: [page errors],
// ran: [output node ids executed], runError: null or why that run failed, group: whether the picture is
// the first group only}}. Before the screenshot, the output nodes that need no model weights
// (no checkpoint or adapter loader upstream, e.g. palette swatches) are executed through the frontend's own
// partial-execution queue, so their previews show in the picture.
//
//   node tests/browser/workflow_shots.mjs http://127.0.0.1:8188 OUT_DIR example_workflows/a.json [...]
// CHROMIUM overrides the browser binary (default /usr/bin/chromium).
import fs from "node:fs";
import path from "node:path";
import { chromium } from "playwright-core";

const [url, outDir, ...files] = process.argv.slice(2);
if (!url || !outDir || files.length === 0) {
  console.error("usage: node workflow_shots.mjs SERVER_URL OUT_DIR WORKFLOW.json [...]");
  process.exit(2);
}
fs.mkdirSync(outDir, { recursive: true });

// Quiet canvas for screenshots: no first-run template dialog, minimap, zoom menu or FPS counter.
const SETTINGS = {
  "Comfy.TutorialCompleted": true,
  "Comfy.Minimap.Visible": false,
  "Comfy.Graph.CanvasMenu": false,
  "Comfy.Graph.CanvasInfo": false,
  "LiteGraph.Canvas.MinFontSizeForLOD": 1, // draw titles and widgets even when zoomed far out
  "Comfy.NodeBadge.NodeSourceBadgeMode": "None",
};
// Nodes whose outputs need model weights: anything downstream of them is not executed for the picture.
const LOADERS = new Set(["CheckpointLoaderSimple", "PaletteAdapterLoader"]);
const OUTPUT_NODES = new Set(["PreviewImage", "SaveImage"]);

/** Ids of the output nodes with no weight loader among their ancestors. */
function modelFreeOutputs(workflow) {
  const types = Object.fromEntries(workflow.nodes.map((n) => [n.id, n.type]));
  const parents = {};
  for (const [, src, , dst] of workflow.links) (parents[dst] ??= []).push(src);
  const needsWeights = (id, seen = new Set()) =>
    LOADERS.has(types[id]) || (parents[id] ?? []).some((p) => !seen.has(p) && needsWeights(p, seen.add(p)));
  return workflow.nodes.filter((n) => OUTPUT_NODES.has(n.type) && !needsWeights(n.id)).map((n) => String(n.id));
}

async function waitForIdleQueue(timeoutMs = 300000) {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const q = await (await fetch(`${url}/api/queue`)).json();
    if (q.queue_running.length === 0 && q.queue_pending.length === 0) return;
    await new Promise((r) => setTimeout(r, 500));
  }
  throw new Error("the queue did not empty in time");
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu"],
});
const report = {};
try {
  for (const [id, value] of Object.entries(SETTINGS)) {
    const r = await fetch(`${url}/api/settings/${id}`, { method: "POST", body: JSON.stringify(value) });
    if (!r.ok) throw new Error(`POST /settings/${id}: ${r.status}`);
  }
  const page = await browser.newPage({ viewport: { width: 1600, height: 1000 }, deviceScaleFactor: 1 });
  let pageErrors = [];
  page.on("pageerror", (e) => pageErrors.push(e.message));
  await page.goto(url, { waitUntil: "networkidle" });
  await page.waitForFunction(() => window.app?.graph && window.app?.extensionManager?.command, null, {
    timeout: 90000,
  });
  pageErrors = []; // errors of the empty start-up page (e.g. offline release checks) are not the workflow's
  for (const file of files) {
    const name = path.basename(file, ".json");
    const workflow = JSON.parse(fs.readFileSync(file, "utf8"));
    const missing = await page.evaluate(async (wf) => {
      const known = window.LiteGraph.registered_node_types;
      const unknown = wf.nodes.map((n) => n.type).filter((t) => !(t in known));
      await window.app.loadGraphData(wf, true, true, null, { showMissingNodesDialog: false });
      return unknown;
    }, workflow);
    const prompt = await page.evaluate(async () => (await window.app.graphToPrompt()).output);
    fs.writeFileSync(path.join(outDir, `${name}.prompt.json`), JSON.stringify(prompt, null, 2));
    const ran = modelFreeOutputs(workflow);
    let runError = null;
    if (ran.length) {
      const posted = page.waitForResponse((r) => r.url().endsWith("/api/prompt") && r.request().method() === "POST");
      await page.evaluate(async (ids) => await window.app.queuePrompt(0, 1, ids), ran);
      const response = await posted;
      const body = await response.json();
      await waitForIdleQueue();
      if (response.status() !== 200) runError = `POST /prompt ${response.status()}: ${JSON.stringify(body)}`;
      else {
        const entry = (await (await fetch(`${url}/api/history/${body.prompt_id}`)).json())[body.prompt_id];
        if (entry?.status?.status_str !== "success") runError = `prompt failed: ${JSON.stringify(entry?.status)}`;
      }
      await page.waitForTimeout(1500); // the executed previews are fetched and drawn
    }
    // The first group (the pack's nodes) fills the picture when there is one, else the whole graph.
    const fitted = await page.evaluate(() => {
      const group = window.app.graph.groups[0];
      if (!group) return false;
      window.app.canvas.ds.fitToBounds(group.boundingRect, { zoom: 0.96 });
      window.app.canvas.setDirty(true, true);
      return true;
    });
    if (!fitted) await page.evaluate(() => window.app.extensionManager.command.execute("Comfy.Canvas.FitView"));
    await page.waitForTimeout(800); // DOM widgets (text boxes) follow the canvas on the next frames
    const shot = path.join(outDir, `${name}.png`);
    if (fitted) {
      const clip = await page.evaluate(() => {
        const [x, y, w, h] = window.app.graph.groups[0].boundingRect;
        const { offset, scale } = window.app.canvas.ds;
        const box = window.app.canvas.canvas.getBoundingClientRect();
        const m = 12; // a margin of canvas around the group
        return {
          x: box.left + (x + offset[0]) * scale - m,
          y: box.top + (y + offset[1]) * scale - m,
          width: w * scale + 2 * m,
          height: h * scale + 2 * m,
        };
      });
      await page.screenshot({ path: shot, clip });
    } else await page.locator("#graph-canvas").screenshot({ path: shot });
    report[name] = { missing, errors: pageErrors, ran, runError, group: fitted };
    pageErrors = [];
  }
} finally {
  await browser.close();
}
fs.writeFileSync(path.join(outDir, "report.json"), JSON.stringify(report, null, 2));
