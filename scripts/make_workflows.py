"""Write the pack's example workflows: the UI format (what ComfyUI's Save/Export writes) and the API copy.

    python scripts/make_workflows.py            # writes example_workflows/<name>.json and api/<name>.api.json
    python scripts/make_workflows.py --check    # exit 1 if a written file would change

Each workflow is described once below (nodes, positions, widget values, connections); both formats are
derived from that description, so they cannot disagree. The socket table (SOCKETS) mirrors the node schemas
(ComfyUI's /object_info); tests/test_workflows.py checks every file against a real ComfyUI's node definitions.
Thumbnails: scripts/workflow_thumbnails.py. The colourisation workflow (colorize_with_palette) predates this
script and is kept as written, except the node properties below.

Every node's properties name the pack it comes from as ComfyUI's frontend reads them (docs/workflows.md):
``cnr_id`` and ``ver`` are pyproject.toml's name and version for this pack's nodes, "comfy-core" and
COMFY_CORE_VERSION for ComfyUI's own; after a version bump, run this script again.
"""

from __future__ import annotations

import argparse
import json
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[1]
WORKFLOWS = REPO / "example_workflows"
API = WORKFLOWS / "api"
CHECKPOINT = "sd_xl_base_1.0.safetensors"
ADAPTER = "palette_adapter_sdxl.safetensors"
KEPT = ["colorize_with_palette"]  # written by hand: only its node properties are kept up to date here
PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
PACK_ID, PACK_VERSION = PROJECT["name"], PROJECT["version"]  # the registry's cnr_id is the project name
COMFY_CORE_VERSION = "0.3.64"  # the ComfyUI the workflows are checked against (tests/test_workflows.py)
# ComfyUI's own node types the workflows use; every other non-virtual type is one of this pack's.
CORE_NODES = {
    "CheckpointLoaderSimple",
    "CLIPTextEncode",
    "EmptyLatentImage",
    "EmptySD3LatentImage",
    "FluxGuidance",
    "KSampler",
    "VAEDecode",
    "VAEEncode",
    "SaveImage",
    "PreviewImage",
    "LoadImage",
    "SolidMask",
    "MaskComposite",
    "InvertMask",
}

# Per node type: its inputs in schema order as (name, socket type) for links or (name, "widget") for widget
# values ("seed" also carries the frontend-only control_after_generate value; LoadImage's image the upload
# button), and its outputs as (name, type). "Note" is a frontend-only node that the API format leaves out.
W = "widget"
SOCKETS: dict[str, tuple[list[tuple[str, str]], list[tuple[str, str]]]] = {
    "CheckpointLoaderSimple": ([("ckpt_name", W)], [("MODEL", "MODEL"), ("CLIP", "CLIP"), ("VAE", "VAE")]),
    "CLIPTextEncode": ([("text", W), ("clip", "CLIP")], [("CONDITIONING", "CONDITIONING")]),
    "EmptyLatentImage": ([("width", W), ("height", W), ("batch_size", W)], [("LATENT", "LATENT")]),
    "EmptySD3LatentImage": ([("width", W), ("height", W), ("batch_size", W)], [("LATENT", "LATENT")]),
    "FluxGuidance": ([("conditioning", "CONDITIONING"), ("guidance", W)], [("CONDITIONING", "CONDITIONING")]),
    "KSampler": (
        [
            ("model", "MODEL"),
            ("seed", W),
            ("steps", W),
            ("cfg", W),
            ("sampler_name", W),
            ("scheduler", W),
            ("positive", "CONDITIONING"),
            ("negative", "CONDITIONING"),
            ("latent_image", "LATENT"),
            ("denoise", W),
        ],
        [("LATENT", "LATENT")],
    ),
    "VAEDecode": ([("samples", "LATENT"), ("vae", "VAE")], [("IMAGE", "IMAGE")]),
    "SaveImage": ([("images", "IMAGE"), ("filename_prefix", W)], []),
    "PreviewImage": ([("images", "IMAGE")], []),
    "LoadImage": ([("image", W)], [("IMAGE", "IMAGE"), ("MASK", "MASK")]),
    "PaletteInput": ([("palette", W)], [("palette", "PALETTE"), ("preview", "IMAGE")]),
    "PalettePreview": ([("palette", "PALETTE")], [("image", "IMAGE")]),
    "PaletteAdapterLoader": ([("adapter_name", W)], [("adapter", "PALETTE_ADAPTER")]),
    "HistogramFromImage": ([("image", "IMAGE")], [("condition", "COLOR_CONDITION"), ("entropy", "FLOAT")]),
    "HistogramPreview": ([("image", "IMAGE"), ("bins", W)], [("preview", "IMAGE")]),
    "NegativePalette": ([("palette", "PALETTE"), ("weight", W)], [("negative", "COLOR_CONDITION")]),
    "EntropyDistanceControl": (
        [
            ("condition", "PALETTE,COLOR_CONDITION"),
            ("entropy_mode", W),
            ("entropy", W),
            ("entropy_reference", W),
            ("distance_mode", W),
            ("distance", W),
            ("distance_reference", W),
        ],
        [("condition", "COLOR_CONDITION")],
    ),
    "ApplyPaletteAdapter": (
        [
            ("model", "MODEL"),
            ("adapter", "PALETTE_ADAPTER"),
            ("condition", "PALETTE,COLOR_CONDITION"),
            ("weight", W),
            ("start_percent", W),
            ("end_percent", W),
            ("blocks", W),
            ("negative", "COLOR_CONDITION"),
            ("mask", "MASK"),
        ],
        [("model", "MODEL")],
    ),
    "PaletteAlign": (
        [
            ("model", "MODEL"),
            ("vae", "VAE"),
            ("palette", "PALETTE"),
            ("stop_percent", W),
            ("strength", W),
            ("mask", "MASK"),
        ],
        [("model", "MODEL")],
    ),
    "PaletteGuidance": (
        [
            ("model", "MODEL"),
            ("palette", "PALETTE"),
            ("strength", W),
            ("steps_per_sample", W),
            ("start_percent", W),
            ("end_percent", W),
            ("decoder", W),
            ("vae", "VAE"),
            ("mask", "MASK"),
            ("negative_palette", "PALETTE"),
            ("negative_strength", W),
        ],
        [("model", "MODEL")],
    ),
    "PaletteRecolor": (
        [
            ("image", "IMAGE"),
            ("palette", "PALETTE"),
            ("strength", W),
            ("matching", W),
            ("keep_neutrals", W),
            ("source_colors", W),
            ("mask", "MASK"),
        ],
        [("image", "IMAGE")],
    ),
    "AutoNegativePalette": (
        [("image", "IMAGE"), ("palette", "PALETTE"), ("threshold", W), ("count", W), ("mask", "MASK")],
        [("negative_palette", "PALETTE"), ("off_palette_share", "FLOAT")],
    ),
    "PaletteFromColor": (
        [("color", W), ("scheme", W), ("count", W), ("lightness_spread", W)],
        [("palette", "PALETTE"), ("preview", "IMAGE")],
    ),
    "PaletteEdit": (
        [("palette", "PALETTE"), ("operation", W), ("amount", W), ("n", W)],
        [("palette", "PALETTE"), ("preview", "IMAGE")],
    ),
    "PaletteQuantize": (
        [
            ("image", "IMAGE"),
            ("palette", "PALETTE"),
            ("dither", W),
            ("distance", W),
            ("pixel_size", W),
            ("mask", "MASK"),
        ],
        [("image", "IMAGE")],
    ),
    "SolidMask": ([("value", W), ("width", W), ("height", W)], [("MASK", "MASK")]),
    "MaskComposite": (
        [("destination", "MASK"), ("source", "MASK"), ("x", W), ("y", W), ("operation", W)],
        [("MASK", "MASK")],
    ),
    "InvertMask": ([("mask", "MASK")], [("MASK", "MASK")]),
    "Note": ([("text", W)], []),
}
VIRTUAL = {"Note"}
# Widget values the frontend stores right after the widget they belong to (not sent in the API format).
EXTRA_WIDGET_VALUES = {("KSampler", "seed"): "fixed", ("LoadImage", "image"): "image"}
NOTE_COLORS = {"color": "#432", "bgcolor": "#653"}


@dataclass
class Node:
    id: int
    type: str
    pos: tuple[int, int]
    size: tuple[int, int]
    widgets: dict = field(default_factory=dict)
    title: str = ""  # shown on the node and as _meta.title in the API copy; every node gets one
    links: dict = field(default_factory=dict)  # input name -> (source node id, output slot)


@dataclass
class Workflow:
    name: str
    title: str
    description: str
    nodes: list[Node]
    groups: list[tuple[str, tuple[int, int, int, int], str]] = field(default_factory=list)


def node_properties(node_type: str, properties: dict | None = None) -> dict:
    """A node's properties with its pack's cnr_id and ver first, as the frontend saves them; Notes keep theirs."""
    properties = dict(properties or {"Node name for S&R": node_type})
    if node_type in VIRTUAL:
        return properties
    pack = ("comfy-core", COMFY_CORE_VERSION) if node_type in CORE_NODES else (PACK_ID, PACK_VERSION)
    rest = {k: v for k, v in properties.items() if k not in ("cnr_id", "ver")}
    return {"cnr_id": pack[0], "ver": pack[1], **rest}


def with_properties(ui: dict) -> dict:
    """A UI workflow (as loaded) with every node's properties from node_properties."""
    for node in ui["nodes"]:
        node["properties"] = node_properties(node["type"], node.get("properties"))
    return ui


def widget_values(node: Node) -> list:
    """The node's widgets_values in the frontend's order, including the frontend-only extra values."""
    out = []
    for name, kind in SOCKETS[node.type][0]:
        if kind == W:
            out.append(node.widgets[name])
            if (node.type, name) in EXTRA_WIDGET_VALUES:
                out.append(EXTRA_WIDGET_VALUES[(node.type, name)])
    return out


def topological_order(nodes: list[Node]) -> dict[int, int]:
    """Execution order the frontend stores per node (sources first, ties by id)."""
    done: dict[int, int] = {}
    pending = sorted(nodes, key=lambda n: n.id)
    while pending:
        ready = [n for n in pending if all(src in done for src, _ in n.links.values())]
        if not ready:
            raise ValueError("the workflow has a cycle")
        for n in ready:
            done[n.id] = len(done)
        pending = [n for n in pending if n.id not in done]
    return done


def ui_workflow(wf: Workflow) -> dict:
    """The frontend (LiteGraph, version 0.4) form of a workflow."""
    by_id = {n.id: n for n in wf.nodes}
    if len(by_id) != len(wf.nodes):
        raise ValueError(f"{wf.name}: duplicate node ids")
    untitled = [n.id for n in wf.nodes if not n.title]
    if untitled:
        raise ValueError(f"{wf.name}: nodes {untitled} have no title")
    links = []
    input_links: dict[tuple[int, str], int] = {}
    for node in wf.nodes:
        sockets = [name for name, kind in SOCKETS[node.type][0] if kind != W]
        for name, (src, slot) in node.links.items():
            links.append(
                [len(links) + 1, src, slot, node.id, sockets.index(name), SOCKETS[by_id[src].type][1][slot][1]]
            )
            input_links[(node.id, name)] = len(links)
    order = topological_order(wf.nodes)
    nodes = []
    for node in wf.nodes:
        in_sockets, outs = SOCKETS[node.type]
        # every socket input is stored, optional ones too (link null when unconnected), in schema order
        inputs = [
            {"name": name, "type": kind, "link": input_links.get((node.id, name))}
            for name, kind in in_sockets
            if kind != W
        ]
        outputs = []
        for slot, (name, kind) in enumerate(outs):
            out_links = [x[0] for x in links if x[1] == node.id and x[2] == slot]
            outputs.append({"name": name, "type": kind, "links": out_links, "slot_index": slot})
        entry = {
            "id": node.id,
            "type": node.type,
            "pos": list(node.pos),
            "size": list(node.size),
            "flags": {},
            "order": order[node.id],
            "mode": 0,
            "inputs": inputs,
            "outputs": outputs,
            "title": node.title,
            "properties": node_properties(node.type) if node.type not in VIRTUAL else {"text": ""},
            "widgets_values": widget_values(node),
        }
        if node.type in VIRTUAL:
            entry.update(NOTE_COLORS)
        nodes.append(entry)
    groups = [
        {"id": i + 1, "title": title, "bounding": list(box), "color": color, "font_size": 24, "flags": {}}
        for i, (title, box, color) in enumerate(wf.groups)
    ]
    return {
        "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"palette-control/workflows/{wf.name}")),
        "revision": 0,
        "last_node_id": max(by_id),
        "last_link_id": len(links),
        "nodes": nodes,
        "links": links,
        "groups": groups,
        "config": {},
        "extra": {"ds": {"scale": 0.7, "offset": [20, 20]}, "info": {"name": wf.title, "description": wf.description}},
        "version": 0.4,
    }


def api_workflow(wf: Workflow) -> dict:
    """The API (prompt) form: what the frontend's 'Export (API)' writes and POST /prompt takes."""
    out = {}
    for node in sorted(wf.nodes, key=lambda n: n.id):
        if node.type in VIRTUAL:
            continue
        inputs = {}
        for name, kind in SOCKETS[node.type][0]:
            if kind == W:
                inputs[name] = node.widgets[name]
            elif name in node.links:
                src, slot = node.links[name]
                inputs[name] = [str(src), slot]
        out[str(node.id)] = {"class_type": node.type, "inputs": inputs, "_meta": {"title": node.title}}
    return out


# --- the workflows -----------------------------------------------------------------------------------------

NEGATIVE_PROMPT = "blurry, low quality, watermark, text"
SAMPLER = {"seed": 42, "steps": 30, "cfg": 6.0, "sampler_name": "dpmpp_2m", "scheduler": "karras", "denoise": 1.0}
PALETTE_GROUP = "#3f789e"
MODEL_GROUP = "#444444"


@dataclass(frozen=True)
class Family:
    """What a text-to-image graph needs to know about a model family: checkpoint, latent node, sampler."""

    label: str
    checkpoint: str
    latent: str
    size: int
    sampler: dict
    flux_guidance: float | None = None  # guidance-distilled Flux: FluxGuidance on the prompt, cfg 1


SDXL_FAMILY = Family("SDXL", CHECKPOINT, "EmptyLatentImage", 1024, SAMPLER)
SD15_FAMILY = Family(
    "SD1.5",
    "v1-5-pruned-emaonly.safetensors",
    "EmptyLatentImage",
    512,
    {**SAMPLER, "steps": 25, "cfg": 7.0},
)
SD35_FAMILY = Family(
    "SD3.5",
    "sd3.5_medium_incl_clips_t5xxlfp8scaled.safetensors",
    "EmptySD3LatentImage",
    1024,
    {**SAMPLER, "steps": 28, "cfg": 4.5, "sampler_name": "euler", "scheduler": "sgm_uniform"},
)
FLUX_FAMILY = Family(
    "Flux",
    "flux1-dev-fp8.safetensors",
    "EmptySD3LatentImage",
    1024,
    {**SAMPLER, "steps": 20, "cfg": 1.0, "sampler_name": "euler", "scheduler": "simple"},
    flux_guidance=3.5,
)


def base_txt2img(prompt: str, model_src: tuple[int, int], prefix: str, family: Family = SDXL_FAMILY) -> list[Node]:
    """Checkpoint, prompts, empty latent, sampler, decode and save: nodes 1-4 and 10-12 (14 for Flux guidance)."""
    positive = (14, 0) if family.flux_guidance is not None else (2, 0)
    nodes = [
        Node(
            1,
            "CheckpointLoaderSimple",
            (40, 120),
            (340, 100),
            {"ckpt_name": family.checkpoint},
            f"Load Checkpoint ({family.label})",
        ),
        Node(2, "CLIPTextEncode", (40, 290), (340, 150), {"text": prompt}, "Positive Prompt", {"clip": (1, 1)}),
        Node(
            3, "CLIPTextEncode", (40, 480), (340, 110), {"text": NEGATIVE_PROMPT}, "Negative Prompt", {"clip": (1, 1)}
        ),
        Node(
            4,
            family.latent,
            (40, 640),
            (340, 110),
            {"width": family.size, "height": family.size, "batch_size": 1},
            "Empty Latent Image",
        ),
        Node(
            10,
            "KSampler",
            (1260, 120),
            (320, 270),
            dict(family.sampler),
            "KSampler",
            {"model": model_src, "positive": positive, "negative": (3, 0), "latent_image": (4, 0)},
        ),
        Node(11, "VAEDecode", (1260, 440), (210, 50), {}, "VAE Decode", {"samples": (10, 0), "vae": (1, 2)}),
        Node(12, "SaveImage", (1620, 120), (420, 470), {"filename_prefix": prefix}, "Save Image", {"images": (11, 0)}),
    ]
    if family.flux_guidance is not None:
        nodes.append(
            Node(
                14,
                "FluxGuidance",
                (1260, 540),
                (320, 60),
                {"guidance": family.flux_guidance},
                "Flux Guidance",
                {"conditioning": (2, 0)},
            )
        )
    return nodes


def palette_nodes(text: str, x: int = 440, y: int = 120, preview_y: int = 430) -> list[Node]:
    """Palette (node 5) and its swatches: Palette Preview (6) into a Preview Image (7)."""
    return [
        Node(5, "PaletteInput", (x, y), (360, 150), {"palette": text}, "Palette"),
        Node(6, "PalettePreview", (x, preview_y), (360, 50), {}, "Palette Preview", {"palette": (5, 0)}),
        Node(7, "PreviewImage", (x, preview_y + 90), (360, 130), {}, "Palette Swatches", {"images": (6, 0)}),
    ]


def note(node_id: int, text: str, pos: tuple[int, int], size: tuple[int, int] = (380, 170)) -> Node:
    return Node(node_id, "Note", pos, size, {"text": text}, "Read me")


ADAPTER_NOTE = (
    "Needs an SDXL checkpoint in models/checkpoints and Palette-Adapter weights in models/palette_adapter "
    f"({ADAPTER}). No trained adapter ships with the pack: train one with train/train_palette_adapter.py or put "
    "one you obtained there, then pick it in Load Palette Adapter.\n\n"
    "Edit the Palette node: hex colours, ':weight' for proportions (e.g. '#e63946:2')."
)

PALETTE_ADAPTER_TXT2IMG = Workflow(
    "palette_adapter_txt2img",
    "Palette-Adapter: text to image with a palette",
    "SDXL text-to-image whose colours follow the palette: Load Palette Adapter + Apply Palette Adapter patch the "
    "model's cross-attention with the palette's colour histogram. Needs trained Palette-Adapter weights.",
    [
        *base_txt2img(
            "a lighthouse on a rocky coast at dusk, poster illustration, clean shapes", (9, 0), "palette_adapter"
        ),
        *palette_nodes("#0b3954:2, #087e8b, #bfd7ea, #ff5a5f, #c81d25"),
        Node(8, "PaletteAdapterLoader", (440, 320), (360, 60), {"adapter_name": ADAPTER}, "Load Palette Adapter"),
        Node(
            9,
            "ApplyPaletteAdapter",
            (840, 120),
            (380, 220),
            {"weight": 1.0, "start_percent": 0.0, "end_percent": 1.0, "blocks": "from file"},
            "Apply Palette Adapter",
            {"model": (1, 0), "adapter": (8, 0), "condition": (5, 0)},
        ),
        note(13, ADAPTER_NOTE, (840, 400)),
    ],
    [("Palette control", (420, 40, 820, 720), PALETTE_GROUP)],
)

PALETTE_ADAPTER_NEGATIVE_ENTROPY = Workflow(
    "palette_adapter_negative_entropy",
    "Palette-Adapter: negative palette and entropy control",
    "The adapter text-to-image workflow plus a Negative Palette (colours to avoid, applied through the CFG "
    "uncond branch) and Entropy / Distance Control (relative entropy -2 bits: flatter images with fewer shades). "
    "Needs trained Palette-Adapter weights.",
    [
        *base_txt2img("a cosy cabin in an autumn forest, flat illustration", (9, 0), "palette_adapter_negative"),
        *palette_nodes("#606c38, #283618, #fefae0, #dda15e:2, #bc6c25", preview_y=760),
        Node(8, "PaletteAdapterLoader", (440, 320), (360, 60), {"adapter_name": ADAPTER}, "Load Palette Adapter"),
        Node(
            9,
            "ApplyPaletteAdapter",
            (840, 120),
            (380, 240),
            {"weight": 1.0, "start_percent": 0.0, "end_percent": 1.0, "blocks": "from file"},
            "Apply Palette Adapter",
            {"model": (1, 0), "adapter": (8, 0), "condition": (14, 0), "negative": (16, 0)},
        ),
        note(13, ADAPTER_NOTE, (840, 720)),
        Node(
            14,
            "EntropyDistanceControl",
            (840, 420),
            (380, 250),
            {
                "entropy_mode": "relative",
                "entropy": -2.0,
                "entropy_reference": 7.0,
                "distance_mode": "off",
                "distance": 0.2,
                "distance_reference": 0.6,
            },
            "Entropy / Distance Control",
            {"condition": (5, 0)},
        ),
        Node(15, "PaletteInput", (440, 440), (360, 120), {"palette": "#1e88e5, #90caf9"}, "Colours to Avoid"),
        Node(
            16,
            "NegativePalette",
            (440, 620),
            (360, 80),
            {"weight": 0.3},
            "Negative Palette",
            {"palette": (15, 0)},
        ),
    ],
    [("Palette control", (420, 40, 820, 1050), PALETTE_GROUP)],
)

HISTOGRAM_FROM_REFERENCE = Workflow(
    "histogram_from_reference",
    "Palette-Adapter: colours of a reference image",
    "Conditions the Palette-Adapter on the full 4080-bin colour histogram of a reference image (richer than a "
    "palette): the generation takes the reference's colours, not its content. Needs trained Palette-Adapter "
    "weights; the reference image ships in example_workflows/input/.",
    [
        *base_txt2img("a quiet harbour town with boats, painterly illustration", (9, 0), "histogram_reference"),
        Node(
            5,
            "LoadImage",
            (440, 120),
            (360, 360),
            {"image": "palette_example_astronaut.jpg"},
            "Load Colour Reference",
        ),
        Node(6, "HistogramFromImage", (440, 540), (360, 70), {}, "Colour Histogram From Image", {"image": (5, 0)}),
        Node(7, "HistogramPreview", (440, 660), (360, 60), {"bins": 32}, "Histogram Preview", {"image": (5, 0)}),
        Node(14, "PreviewImage", (840, 660), (380, 150), {}, "Reference Colours", {"images": (7, 0)}),
        Node(8, "PaletteAdapterLoader", (840, 400), (380, 60), {"adapter_name": ADAPTER}, "Load Palette Adapter"),
        Node(
            9,
            "ApplyPaletteAdapter",
            (840, 120),
            (380, 220),
            {"weight": 1.0, "start_percent": 0.0, "end_percent": 1.0, "blocks": "from file"},
            "Apply Palette Adapter",
            {"model": (1, 0), "adapter": (8, 0), "condition": (6, 0)},
        ),
        note(
            13,
            ADAPTER_NOTE.split("\n\n")[0]
            + "\n\nThe pack copies palette_example_astronaut.jpg into ComfyUI/input when it loads (or upload "
            "your own reference in Load Image).",
            (1260, 540),
        ),
    ],
    [("Colour reference", (420, 40, 820, 800), PALETTE_GROUP)],
)


def palette_align_node() -> Node:
    """Palette Align (node 9) between the checkpoint (model, VAE) and the Palette node, at the paper's settings."""
    return Node(
        9,
        "PaletteAlign",
        (840, 120),
        (380, 150),
        {"stop_percent": 0.2, "strength": 1.0},
        "Palette Align (zero-shot)",
        {"model": (1, 0), "vae": (1, 2), "palette": (5, 0)},
    )


TRAINING_FREE_ALIGNMENT = Workflow(
    "training_free_alignment",
    "Training-free: zero-shot palette alignment",
    "Palette Align rearranges the model's predicted image at every step to use exactly the palette's colours in "
    "the palette's proportions (Color Alignment in Diffusion, zero-shot). Works with any SDXL checkpoint; no "
    "adapter weights.",
    [
        *base_txt2img("a hot air balloon festival over rolling hills, illustration", (9, 0), "palette_align"),
        *palette_nodes("#ffbe0b, #fb5607, #ff006e:2, #8338ec, #3a86ff", preview_y=330),
        palette_align_node(),
        note(
            13,
            "Any SDXL checkpoint (models/checkpoints); no adapter needed.\n\nstop_percent: the last fraction of "
            "the steps left unaligned so the model can refine details (0.2 as in the paper). Lower strength for a "
            "looser match.",
            (840, 320),
        ),
    ],
    [("Palette control", (420, 40, 820, 640), PALETTE_GROUP)],
)


def palette_align_for(family: Family, name: str, prompt: str, palette: str, advice: str) -> Workflow:
    """Palette Align on one model family's checkpoint: the training_free_alignment graph with its loader."""
    return Workflow(
        name,
        f"Training-free: zero-shot palette alignment on {family.label}",
        f"Palette Align on a {family.label} checkpoint: the model's predicted image is rearranged at every step to use "
        "exactly the palette's colours in the palette's proportions. No adapter weights.",
        [
            *base_txt2img(prompt, (9, 0), f"palette_align_{name.rsplit('_', 1)[-1]}", family),
            *palette_nodes(palette, preview_y=400),
            palette_align_node(),
            note(13, advice, (840, 320)),
        ],
        [("Palette control", (420, 40, 820, 640), PALETTE_GROUP)],
    )


PALETTE_ALIGN_SD15 = palette_align_for(
    SD15_FAMILY,
    "palette_align_sd15",
    "a cosy reading corner with plants and a cat, illustration",
    "#606c38, #283618, #fefae0:2, #dda15e, #bc6c25",
    f"Any SD1.5 checkpoint (models/checkpoints, e.g. {SD15_FAMILY.checkpoint}); 512 x 512. Palette Align reads the "
    "model's latent format, so the same node works on SD1.5, SDXL, SD3.5 and Flux.\n\nstop_percent 0.2 leaves "
    "the last steps for detail.",
)
PALETTE_ALIGN_SD35 = palette_align_for(
    SD35_FAMILY,
    "palette_align_sd35",
    "a lighthouse on a rocky coast at dawn, poster art",
    "#003049, #d62828, #f77f00, #fcbf49:2, #eae2b7",
    f"An SD3.5 checkpoint with its text encoders (models/checkpoints, e.g. {SD35_FAMILY.checkpoint}); "
    "Empty SD3 Latent Image makes its 16-channel latents.\n\nstop_percent 0.2 leaves the last steps for "
    "detail; lower strength for a looser match.",
)
PALETTE_ALIGN_FLUX = palette_align_for(
    FLUX_FAMILY,
    "palette_align_flux",
    "a fox in a snowy forest, flat vector illustration",
    "#0d1b2a, #1b263b, #415a77, #778da9, #e0e1dd:2",
    f"A Flux checkpoint with its text encoders (models/checkpoints, e.g. {FLUX_FAMILY.checkpoint}). Flux dev and "
    "schnell are guidance-distilled: cfg stays 1 (the negative prompt is unused) and Flux Guidance sets the "
    "strength of the prompt; Palette Align acts at cfg 1 too.\n\nschnell: 4 steps.",
)

SW_PALETTE_GUIDANCE = Workflow(
    "sw_palette_guidance",
    "Training-free: sliced-Wasserstein palette guidance",
    "Palette Guidance nudges the model's predicted image toward the palette's colour distribution with a few "
    "gradient steps per sampling step (sliced Wasserstein distance, through the fast linear latent decoder). "
    "Works with any SDXL checkpoint; no adapter weights.",
    [
        *base_txt2img("a city street in the rain at night, neon signs, reflections", (9, 0), "palette_guidance"),
        *palette_nodes("#2b2d42, #8d99ae, #edf2f4, #ef233c:2, #d90429", preview_y=330),
        Node(
            9,
            "PaletteGuidance",
            (840, 120),
            (380, 220),
            {
                "strength": 1.0,
                "steps_per_sample": 4,
                "start_percent": 0.0,
                "end_percent": 0.8,
                "decoder": "fast",
                "negative_strength": 1.0,
            },
            "Palette Guidance (sliced Wasserstein)",
            {"model": (1, 0), "palette": (5, 0)},
        ),
        note(
            13,
            "Any SDXL checkpoint (models/checkpoints); no adapter needed.\n\ndecoder 'fast' is nearly free; "
            "'exact' differentiates the VAE decoder (connect the checkpoint's VAE to the vae input; slower). "
            "end_percent 0.8 leaves the last steps for detail.",
            (840, 400),
        ),
    ],
    [("Palette control", (420, 40, 820, 640), PALETTE_GROUP)],
)

RECOLOR_IMAGE = Workflow(
    "recolor_image",
    "Recolour a photo to a palette",
    "Palette Recolor moves a photo's colours to the palette (optimal transport in CIELAB, weights as "
    "proportions) and keeps every pixel's lightness. No model needed; runs in seconds on a CPU.",
    [
        Node(1, "LoadImage", (40, 120), (340, 360), {"image": "palette_example_coffee.jpg"}, "Load Photo"),
        Node(
            2,
            "PaletteInput",
            (40, 540),
            (340, 150),
            {"palette": "#0b3954:2, #087e8b, #bfd7ea, #ff5a5f, #c81d25"},
            "Palette",
        ),
        Node(
            3,
            "PaletteRecolor",
            (440, 120),
            (340, 180),
            {"strength": 1.0, "matching": "optimal transport", "keep_neutrals": False, "source_colors": 0},
            "Palette Recolor",
            {"image": (1, 0), "palette": (2, 0)},
        ),
        Node(
            4,
            "SaveImage",
            (840, 120),
            (420, 360),
            {"filename_prefix": "palette_recolor"},
            "Save Image",
            {"images": (3, 0)},
        ),
        Node(5, "PreviewImage", (440, 540), (340, 150), {}, "Palette Swatches", {"images": (2, 1)}),
        note(
            6,
            "No model needed. The pack copies palette_example_coffee.jpg into ComfyUI/input when it loads (or "
            "upload any photo in Load Photo).\n\nstrength < 1 for a subtler grade; keep_neutrals keeps greys grey; "
            "'by share order' sends the photo's most common colour to the first palette colour.",
            (840, 540),
            (420, 150),
        ),
    ],
)


def two_regions() -> Workflow:
    """Two Palette Align nodes on one model, each with its own mask: the left half warm, the right half cool."""
    size = SDXL_FAMILY.size
    region = (840, 120)
    return Workflow(
        "two_regions_two_palettes",
        "Training-free: two regions, two palettes",
        "A palette per region: two Palette Align nodes chained on one model, each with a mask (the image's left and "
        "right halves, made with ComfyUI's mask nodes). Each half takes its own palette; where masks overlap the "
        "effects blend by mask weight. Works with any SDXL checkpoint (and SD1.5, SD3.5, Flux); no adapter weights.",
        [
            *base_txt2img("a city street market at dusk, illustration", (21, 0), "two_regions"),
            Node(5, "PaletteInput", (440, 120), (360, 290), {"palette": "#d62828, #f77f00:2, #fcbf49"}, "Left palette"),
            Node(
                15, "PaletteInput", (440, 440), (360, 290), {"palette": "#1d3557, #457b9d:2, #a8dadc"}, "Right palette"
            ),
            Node(16, "SolidMask", (440, 780), (330, 110), {"value": 0.0, "width": size, "height": size}, "Empty mask"),
            Node(17, "SolidMask", (440, 930), (330, 110), {"value": 1.0, "width": size // 2, "height": size}, "Half"),
            Node(
                18,
                "MaskComposite",
                (840, 780),
                (380, 160),
                {"x": 0, "y": 0, "operation": "add"},
                "Left half",
                {"destination": (16, 0), "source": (17, 0)},
            ),
            Node(20, "InvertMask", (840, 980), (380, 60), {}, "Right half", {"mask": (18, 0)}),
            Node(
                9,
                "PaletteAlign",
                region,
                (380, 170),
                {"stop_percent": 0.2, "strength": 1.0},
                "Palette Align (left)",
                {"model": (1, 0), "vae": (1, 2), "palette": (5, 0), "mask": (18, 0)},
            ),
            Node(
                21,
                "PaletteAlign",
                (840, 360),
                (380, 170),
                {"stop_percent": 0.2, "strength": 1.0},
                "Palette Align (right)",
                {"model": (9, 0), "vae": (1, 2), "palette": (15, 0), "mask": (20, 0)},
            ),
            note(
                13,
                "Any SDXL checkpoint (models/checkpoints); no adapter needed.\n\nEach Palette Align acts only inside "
                "its mask. Draw masks in the Mask Editor (Load Image), or build them from shapes as here. Soft masks "
                "blend; pixels outside every mask are left to the model. Palette Guidance and Apply Palette Adapter "
                "take masks the same way (docs/regions.md).",
                (1260, 640),
                (420, 190),
            ),
        ],
        [("Palette per region", (420, 40, 820, 1040), PALETTE_GROUP)],
    )


TWO_REGIONS = two_regions()

GUIDANCE_WIDGETS = {
    "strength": 1.0,
    "steps_per_sample": 4,
    "start_percent": 0.0,
    "end_percent": 0.8,
    "decoder": "fast",
    "negative_strength": 1.0,
}

AUTO_NEGATIVE_TWO_PASS = Workflow(
    "auto_negative_two_pass",
    "Training-free: two passes with an automatic negative palette",
    "A first pass with Palette Guidance; Auto Negative Palette collects the colours of its image that stay far "
    "from the palette (CIEDE2000 beyond 10) and the second pass, same seed, is guided away from them and toward "
    "the palette. Works with any SDXL checkpoint; no adapter weights.",
    [
        *base_txt2img("a city street in the rain at night, neon signs, reflections", (9, 0), "auto_negative"),
        *palette_nodes("#2b2d42, #8d99ae, #edf2f4, #ef233c:2, #d90429", preview_y=330),
        Node(
            9,
            "PaletteGuidance",
            (840, 120),
            (380, 250),
            GUIDANCE_WIDGETS,
            "Palette Guidance (first pass)",
            {"model": (1, 0), "palette": (5, 0)},
        ),
        Node(
            15,
            "AutoNegativePalette",
            (1620, 640),
            (340, 130),
            {"threshold": 10.0, "count": 3},
            "Auto Negative Palette",
            {"image": (11, 0), "palette": (5, 0)},
        ),
        Node(16, "PalettePreview", (1620, 820), (340, 50), {}, "Negative Palette Preview", {"palette": (15, 0)}),
        Node(17, "PreviewImage", (1620, 910), (340, 130), {}, "Negative Swatches", {"images": (16, 0)}),
        Node(
            18,
            "PaletteGuidance",
            (2080, 120),
            (380, 250),
            GUIDANCE_WIDGETS,
            "Palette Guidance (second pass)",
            {"model": (1, 0), "palette": (5, 0), "negative_palette": (15, 0)},
        ),
        Node(
            19,
            "KSampler",
            (2520, 120),
            (320, 270),
            dict(SDXL_FAMILY.sampler),
            "KSampler (second pass)",
            {"model": (18, 0), "positive": (2, 0), "negative": (3, 0), "latent_image": (4, 0)},
        ),
        Node(20, "VAEDecode", (2520, 440), (210, 50), {}, "VAE Decode", {"samples": (19, 0), "vae": (1, 2)}),
        Node(
            21,
            "SaveImage",
            (2880, 120),
            (420, 470),
            {"filename_prefix": "auto_negative_second_pass"},
            "Save Image (second pass)",
            {"images": (20, 0)},
        ),
        note(
            22,
            "Any SDXL checkpoint (models/checkpoints); no adapter needed. Both KSamplers share the seed and the "
            "latent, so the second image is the first one steered away from its off-palette colours.\n\n"
            "Auto Negative Palette: lower threshold to catch near misses; count = how many colours to avoid. "
            "It stops with a clear message when the first pass has nothing off-palette.",
            (840, 420),
        ),
    ],
    [("Palette control", (420, 40, 820, 640), PALETTE_GROUP)],
)

PALETTE_CRAFT_QUANTIZE = Workflow(
    "palette_craft_quantize",
    "Palette craft: a scheme from one colour, an edit, and a photo quantised to it",
    "Palette From Color builds a split-complementary palette from one colour, Palette Edit darkens it a little, "
    "and Palette Quantize turns every pixel of a photo into one of its colours with Floyd-Steinberg dithering "
    "(a second Palette Quantize makes 4-pixel pixel art). No model needed; runs in seconds on a CPU.",
    [
        Node(1, "LoadImage", (40, 120), (340, 360), {"image": "palette_example_coffee.jpg"}, "Load Photo"),
        Node(
            2,
            "PaletteFromColor",
            (40, 540),
            (340, 170),
            {"color": "#e76f51", "scheme": "split_complementary", "count": 6, "lightness_spread": 0.4},
            "Palette From Color",
        ),
        Node(
            3,
            "PaletteEdit",
            (440, 540),
            (340, 130),
            {"operation": "darken", "amount": 0.05, "n": 5},
            "Palette Edit",
            {"palette": (2, 0)},
        ),
        Node(4, "PreviewImage", (440, 720), (340, 130), {}, "Palette Swatches", {"images": (3, 1)}),
        Node(
            5,
            "PaletteQuantize",
            (440, 120),
            (340, 160),
            {"dither": "floyd-steinberg", "distance": "perceptual (CIELAB)", "pixel_size": 1},
            "Palette Quantize",
            {"image": (1, 0), "palette": (3, 0)},
        ),
        Node(
            6,
            "SaveImage",
            (840, 120),
            (420, 360),
            {"filename_prefix": "palette_quantize"},
            "Save Image",
            {"images": (5, 0)},
        ),
        Node(
            7,
            "PaletteQuantize",
            (440, 320),
            (340, 160),
            {"dither": "none", "distance": "perceptual (CIELAB)", "pixel_size": 4},
            "Palette Quantize (pixel art)",
            {"image": (1, 0), "palette": (3, 0)},
        ),
        Node(8, "PreviewImage", (840, 540), (420, 310), {}, "Pixel Art", {"images": (7, 0)}),
        note(
            9,
            "No model needed. Change the colour and the scheme in Palette From Color (complementary, analogous, "
            "triadic, tetradic, monochromatic, tints, shades...), or connect any palette to Palette Quantize.\n\n"
            "dither: floyd-steinberg and atkinson keep gradients, bayer and blue noise give a regular texture, "
            "none gives flat posters; pixel_size > 1 makes pixel art.",
            (1300, 120),
        ),
    ],
)

WORKFLOW_LIST = [
    PALETTE_ADAPTER_TXT2IMG,
    PALETTE_ADAPTER_NEGATIVE_ENTROPY,
    HISTOGRAM_FROM_REFERENCE,
    TRAINING_FREE_ALIGNMENT,
    SW_PALETTE_GUIDANCE,
    RECOLOR_IMAGE,
    PALETTE_ALIGN_SD15,
    PALETTE_ALIGN_SD35,
    PALETTE_ALIGN_FLUX,
    TWO_REGIONS,
    AUTO_NEGATIVE_TWO_PASS,
    PALETTE_CRAFT_QUANTIZE,
]


def dump(data: dict) -> str:
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


def expected_files() -> list[tuple[Path, dict]]:
    """Every file this script owns and its content: both forms of each workflow, the kept ones' UI form."""
    files = []
    for wf in WORKFLOW_LIST:
        files += [(WORKFLOWS / f"{wf.name}.json", ui_workflow(wf)), (API / f"{wf.name}.api.json", api_workflow(wf))]
    for name in KEPT:
        path = WORKFLOWS / f"{name}.json"
        files.append((path, with_properties(json.loads(path.read_text()))))
    return files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report files that would change")
    args = parser.parse_args(argv)
    stale = []
    for path, data in expected_files():
        text = dump(data)
        if path.exists() and path.read_text() == text:
            continue
        stale.append(path)
        if not args.check:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    for path in stale:
        sys.stdout.write(("stale: " if args.check else "wrote: ") + str(path.relative_to(REPO)) + "\n")
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
