"""The batch report: per image its job, file, seed, server and palette EMD (CSV, JSON, markdown), the
throughput of each server, and a contact sheet.

The EMD is palette_core.distance.palette_emd with its defaults, the paper's protocol (Table 1): 1024
pixels drawn with a fixed seed, exact W1 in RGB against the job's palette and weights.
"""

from __future__ import annotations

import csv
import io
import json
import math
import statistics
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from palette_core.distance import palette_emd
from palette_core.errors import PaletteError
from palette_core.palette import Palette
from palette_core.render import palette_stripes

from .jobs import Plan
from .state import State, server_throughput, write_atomic

FIELDS = (
    "job",
    "line",
    "name",
    "status",
    "file",
    "width",
    "height",
    "seed",
    "palette",
    "palette_emd",
    "prompt_id",
    "server",
    "attempts",
    "key",
    "error",
)


def load_rgb(path: Path) -> torch.Tensor:
    """An image file as ``[H, W, 3]`` float32 sRGB in [0, 1] (alpha dropped), as ComfyUI's loader gives."""
    from PIL import Image

    with Image.open(path) as im:
        return torch.from_numpy(np.array(im.convert("RGB"), dtype=np.uint8)).float() / 255.0


def image_emd(image: torch.Tensor, palette: Palette) -> float:
    """The paper's palette EMD of one image against a palette (palette_core.distance.palette_emd)."""
    return float(palette_emd(image, palette.colors, palette.weights))


def report_rows(plan: Plan, state: State, out_dir: Path) -> list[dict]:
    """One row per downloaded image (one per job without images), in job order, with its EMD."""
    rows = []
    for job in plan.jobs:
        js = state.jobs.get(job.key)
        palette = None
        if job.palette is not None:
            try:
                palette = Palette.parse(job.palette)
            except PaletteError:
                palette = None
        base = {
            "job": job.number,
            "line": job.line,
            "name": job.name,
            "status": js.status if js else "pending",
            "seed": job.seed,
            "palette": palette.to_text() if palette is not None else job.palette,
            "prompt_id": js.prompt_id if js else None,
            "server": js.server if js else None,
            "attempts": js.attempts if js else 0,
            "key": job.key,
            "error": js.error if js else None,
            "fields": job.fields,
        }
        files = js.files if js and js.status == "done" else []
        if not files:
            rows.append({**base, "file": None, "width": None, "height": None, "palette_emd": None})
        for rel in files:
            row = {**base, "file": rel, "width": None, "height": None, "palette_emd": None}
            path = out_dir / rel
            if path.exists():
                image = load_rgb(path)
                row["height"], row["width"] = image.shape[0], image.shape[1]
                if palette is not None:
                    row["palette_emd"] = round(image_emd(image, palette), 6)
            rows.append(row)
    return rows


def write_csv(rows: list[dict], path: Path) -> None:
    """The rows as CSV: the fixed columns, then each jobs-file column not already among them."""
    extra = list(dict.fromkeys(k for r in rows for k in r["fields"] if k not in FIELDS))
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(list(FIELDS) + extra)
    for r in rows:
        w.writerow([("" if r[k] is None else r[k]) for k in FIELDS] + [r["fields"].get(k, "") for k in extra])
    write_atomic(path, buf.getvalue().encode("utf-8"))


def _emd_stats(rows: list[dict]) -> tuple[int, float, float, float] | None:
    values = [r["palette_emd"] for r in rows if r["palette_emd"] is not None]
    if not values:
        return None
    return len(values), statistics.fmean(values), min(values), max(values)


def throughput_lines(servers: list[dict]) -> list[str]:
    """The per-server table of report.md (see state.server_throughput)."""

    def number(value: float | None, digits: int) -> str:
        return "" if value is None else f"{value:.{digits}f}"

    lines = ["| server | jobs | images | busy s | wall s | jobs/min |", "|---|---|---|---|---|---|"]
    for s in servers:
        lines.append(
            f"| {s['server'] or '(not recorded)'} | {s['jobs']} | {s['images']} | {number(s['busy_s'], 1)} | "
            f"{number(s['wall_s'], 1)} | {number(s['jobs_per_min'], 2)} |"
        )
    return lines


def write_markdown(
    rows: list[dict],
    path: Path,
    workflow: str,
    jobs_file: str,
    sheet: str | None,
    servers: list[dict] | None = None,
) -> None:
    """A short summary: counts, mean EMD, per-server throughput, the contact sheet, a table, each failure's message."""
    jobs = {r["job"]: r for r in rows}
    status = [r["status"] for r in jobs.values()]
    lines = [
        "# Batch report",
        "",
        f"Workflow `{workflow}`, jobs `{jobs_file}`: {len(jobs)} jobs, {status.count('done')} done, "
        f"{status.count('failed')} failed, {len(jobs) - status.count('done') - status.count('failed')} not finished; "
        f"{sum(r['file'] is not None for r in rows)} images.",
    ]
    stats = _emd_stats(rows)
    if stats:
        n, mean, lo, hi = stats
        lines.append(
            f"Palette EMD (paper protocol, lower is closer) over {n} images: mean {mean:.4f}, min {lo:.4f}, "
            f"max {hi:.4f}."
        )
    if servers:
        lines += [
            "",
            "Throughput per server (busy: the server's own time for the jobs; wall: first queued to last finished):",
            "",
        ]
        lines += throughput_lines(servers)
    if sheet:
        lines += ["", f"![contact sheet]({sheet})"]
    several = len({r["server"] for r in rows if r["status"] == "done"}) > 1
    columns = ["job", "name", "status", "image", "seed", "palette EMD"] + (["server"] if several else [])
    lines += ["", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for r in rows:
        emd = "" if r["palette_emd"] is None else f"{r['palette_emd']:.4f}"
        image = f"[{Path(r['file']).name}]({r['file']})" if r["file"] else ""
        name = str(r["name"] or "").replace("|", "\\|")
        server = f" {r['server'] or ''} |" if several else ""
        lines.append(
            f"| {r['job']} | {name} | {r['status']} | {image} | {r['seed'] if r['seed'] is not None else ''} | {emd} |"
            + server
        )
    failures = [r for r in jobs.values() if r["status"] == "failed"]
    if failures:
        lines += ["", "## Failures", ""]
        lines += [f"- job {r['job']} (line {r['line']}): {str(r['error']).strip()}" for r in failures]
    write_atomic(path, ("\n".join(lines) + "\n").encode("utf-8"))


@dataclass(frozen=True)
class SheetLayout:
    """Where each tile of the contact sheet lies: thumbnail, palette stripe, then two lines of text."""

    count: int
    thumb: int = 192
    stripe: int = 16
    text: int = 30
    margin: int = 8

    @property
    def cols(self) -> int:
        """Tiles per row (a near-square grid, at most 8 wide)."""
        return max(1, min(8, self.count, math.ceil(math.sqrt(self.count))))

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the sheet."""
        rows = max(1, math.ceil(self.count / self.cols))
        return (
            self.margin + self.cols * (self.thumb + self.margin),
            self.margin + rows * (self.thumb + self.stripe + self.text + self.margin),
        )

    def origin(self, i: int) -> tuple[int, int]:
        """Top-left corner of tile ``i``."""
        r, c = divmod(i, self.cols)
        return self.margin + c * (self.thumb + self.margin), self.margin + r * (
            self.thumb + self.stripe + self.text + self.margin
        )

    def stripe_box(self, i: int) -> tuple[int, int, int, int]:
        """(left, top, right, bottom) of tile ``i``'s palette stripe."""
        x, y = self.origin(i)
        return x, y + self.thumb + 2, x + self.thumb, y + self.thumb + 2 + self.stripe


def contact_sheet(rows: list[dict], out_dir: Path, path: Path, thumb: int = 192) -> Path | None:
    """A PNG grid: each image's thumbnail (centred in its square), its palette stripe, job name and EMD."""
    from PIL import Image, ImageDraw, ImageFont

    tiles = [r for r in rows if r["file"] or r["status"] == "failed"]
    if not tiles:
        return None
    layout = SheetLayout(len(tiles), thumb)
    sheet = Image.new("RGB", layout.size, (250, 250, 250))
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default()
    for i, r in enumerate(tiles):
        x, y = layout.origin(i)
        if r["file"] and (out_dir / r["file"]).exists():
            with Image.open(out_dir / r["file"]) as im:
                im = im.convert("RGB")
                im.thumbnail((thumb, thumb), Image.Resampling.LANCZOS)
                sheet.paste(im, (x + (thumb - im.width) // 2, y + (thumb - im.height) // 2))
            caption = "EMD " + ("-" if r["palette_emd"] is None else f"{r['palette_emd']:.4f}")
        else:
            draw.rectangle((x, y, x + thumb - 1, y + thumb - 1), fill=(200, 200, 200))
            label = "FAILED" if r["status"] == "failed" else "MISSING"
            draw.text((x + 6, y + thumb // 2 - 6), label, fill=(160, 0, 0), font=font)
            caption = (str(r["error"] or r["file"] or "").strip() or "-").splitlines()[0][: thumb // 6]
        if r["palette"]:
            try:
                p = Palette.parse(r["palette"])
            except PaletteError:
                p = None
            if p is not None:
                left, top, right, bottom = layout.stripe_box(i)
                stripes = palette_stripes(p.colors, p.weights, height=bottom - top, width=right - left)
                sheet.paste(Image.fromarray((stripes * 255).round().byte().numpy()), (left, top))
        title = f"#{r['job']} {r['name'] or ''}".strip()[: thumb // 6]
        ty = y + thumb + layout.stripe + 4
        draw.text((x, ty), title, fill=(20, 20, 20), font=font)
        draw.text((x, ty + 13), caption, fill=(60, 60, 60), font=font)
    buf = io.BytesIO()
    sheet.save(buf, format="PNG")
    write_atomic(path, buf.getvalue())
    return path


def write_reports(plan: Plan, state: State, out_dir: Path, workflow: str, jobs_file: str, thumb: int = 192) -> dict:
    """report.csv, report.json, report.md and contact_sheet.png in ``out_dir``; returns their paths."""
    rows = report_rows(plan, state, out_dir)
    paths = {"csv": out_dir / "report.csv", "json": out_dir / "report.json", "md": out_dir / "report.md"}
    write_csv(rows, paths["csv"])
    write_atomic(paths["json"], json.dumps(rows, indent=1, default=str).encode("utf-8"))
    sheet = contact_sheet(rows, out_dir, out_dir / "contact_sheet.png", thumb)
    if sheet is not None:
        paths["sheet"] = sheet
    servers = server_throughput(state, [job.key for job in plan.jobs])
    write_markdown(rows, paths["md"], workflow, jobs_file, sheet.name if sheet else None, servers)
    return paths
