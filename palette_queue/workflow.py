"""An API-format ComfyUI prompt: loading, friendly column -> node input mapping, and patching.

The API format (what "Save (API)" / "Export (API)" writes, and what ``POST /prompt`` takes) is
``{node_id: {"class_type": str, "inputs": {name: literal | [source_id, output_slot]}, "_meta": {"title"}}}``.
A friendly column such as ``palette`` or ``seed`` is resolved by walking that graph; an explicit column
``<node id>.<input>``, ``<node title>.<input>`` or ``<class_type>.<input>`` names one input directly.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from palette_core.image_file import ImageFileError, read_regular

from .errors import MappingError, QueueInputError

TEXT_INPUTS = ("text", "text_g", "text_l")
SEED_INPUTS = ("seed", "noise_seed")
STRENGTH_CLASSES = ("PaletteRecolor", "PaletteAlign", "PaletteGuidance")
# Nodes whose outputs are (positive, negative) conditioning: a walk up the positive path follows only
# their `positive` input (ControlNetApplyAdvanced, InstructPixToPixConditioning, ...).
BRANCH_INPUTS = ("positive", "negative")


def is_link(value: object) -> bool:
    """True for an API-format link ``[source_node_id, output_slot]``."""
    return (
        isinstance(value, list)
        and len(value) == 2
        and isinstance(value[0], str)
        and isinstance(value[1], int)
        and not isinstance(value[1], bool)
    )


def load_prompt(path: str | Path) -> dict:
    """Read an API-format workflow file and check its shape (a UI-format workflow is refused with a hint)."""
    path = Path(path)
    if path.is_dir():
        raise QueueInputError(f"{path}: is a folder: expected an API-format workflow .json file")
    if not path.exists():
        raise QueueInputError(f"{path}: no such workflow file")
    try:
        data = json.loads(read_regular(path, "workflow").decode("utf-8"))  # a FIFO or a device is refused
    except ImageFileError as e:
        raise QueueInputError(str(e)) from None
    except UnicodeDecodeError as e:
        raise QueueInputError(f"{path}: not a text file ({e.reason})") from None
    except json.JSONDecodeError as e:
        raise QueueInputError(f"{path}: not valid JSON (line {e.lineno}, column {e.colno}: {e.msg})") from None
    return check_prompt(data, str(path))


def check_prompt(data: object, where: str = "workflow") -> dict:
    """The API prompt in ``data`` (also accepted: a ``POST /prompt`` body ``{"prompt": {...}}``)."""
    if isinstance(data, dict) and "nodes" in data and "links" in data:
        raise QueueInputError(
            f"{where}: this is a UI workflow (it has 'nodes' and 'links'); the batch queue needs the API format: "
            "in ComfyUI use Workflow > Export (API) (or 'Save (API)'), e.g. example_workflows/*.api.json"
        )
    if isinstance(data, dict) and isinstance(data.get("prompt"), dict) and "class_type" not in data["prompt"]:
        data = data["prompt"]
    if not isinstance(data, dict) or not data:
        raise QueueInputError(f"{where}: expected a JSON object of nodes {{id: {{class_type, inputs}}}}")
    for nid, node in data.items():
        if not isinstance(node, dict) or not isinstance(node.get("class_type"), str):
            raise QueueInputError(f"{where}: node {nid!r} has no class_type: not an API-format workflow")
        if not isinstance(node.get("inputs", {}), dict):
            raise QueueInputError(f"{where}: node {nid} ({node['class_type']}): 'inputs' is not an object")
        for name, value in node.get("inputs", {}).items():
            if is_link(value) and value[0] not in data:
                raise QueueInputError(
                    f"{where}: node {nid} input {name!r} links to node {value[0]!r}, which is missing"
                )
    return data


@dataclass(frozen=True)
class Target:
    """One literal input of one node: what a column writes to."""

    node_id: str
    input: str

    @property
    def column(self) -> str:
        """The explicit column name that writes this input."""
        return f"{self.node_id}.{self.input}"


def title(prompt: dict, nid: str) -> str:
    """The node's title in the editor (``_meta.title``), or its class_type."""
    return str(prompt[nid].get("_meta", {}).get("title") or prompt[nid]["class_type"])


def describe(prompt: dict, target: Target) -> str:
    """``'6.palette' (PaletteInput 'Palette')`` -- how a candidate is named in messages."""
    node = prompt[target.node_id]
    return f"'{target.column}' ({node['class_type']} {title(prompt, target.node_id)!r})"


def _sorted(targets: Iterable[Target]) -> list[Target]:
    def order(t: Target):
        return (0, int(t.node_id), "", t.input) if t.node_id.isdigit() else (1, 0, t.node_id, t.input)

    return sorted(set(targets), key=order)


def _literal_inputs(prompt: dict, names: Iterable[str], where: Callable[[str, dict], bool] = lambda n, d: True):
    return [
        Target(nid, name)
        for nid, node in prompt.items()
        for name in names
        if name in node.get("inputs", {}) and not is_link(node["inputs"][name]) and where(nid, node)
    ]


def _upstream(prompt: dict, start: list, branch: str) -> set[str]:
    """Node ids reachable upward from the links in ``start``, keeping to ``branch`` through branch nodes."""
    seen: set[str] = set()
    todo = [link for link in start if is_link(link)]
    while todo:
        src, _slot = todo.pop()
        if src in seen:
            continue
        seen.add(src)
        inputs = prompt[src].get("inputs", {})
        is_branch_node = all(is_link(inputs.get(b)) for b in BRANCH_INPUTS)
        for name, value in inputs.items():
            if is_branch_node and name in BRANCH_INPUTS and name != branch:
                continue
            if is_link(value):
                todo.append(value)
    return seen


def _conditioning_roots(prompt: dict, branch: str) -> list:
    """The links entering every ``positive`` (or ``negative``) input, plus BasicGuider's conditioning."""
    roots = [node["inputs"][branch] for node in prompt.values() if is_link(node.get("inputs", {}).get(branch))]
    if branch == "positive":
        roots += [
            node["inputs"]["conditioning"]
            for node in prompt.values()
            if node["class_type"] == "BasicGuider" and is_link(node["inputs"].get("conditioning"))
        ]
    return roots


def _text_targets(prompt: dict, nodes: set[str]) -> list[Target]:
    """The text inputs of the encoders among ``nodes`` (an SDXL encoder's text_g and text_l together)."""
    out = []
    for nid in nodes:
        inputs = prompt[nid].get("inputs", {})
        if not any(name in inputs for name in TEXT_INPUTS):
            continue
        for name in TEXT_INPUTS:
            value = inputs.get(name)
            if isinstance(value, str):
                out.append(Target(nid, name))
            elif is_link(value):  # a text primitive feeding the encoder: write the primitive's value
                src = prompt[value[0]].get("inputs", {})
                out += [Target(value[0], k) for k in ("value", "string", "text") if isinstance(src.get(k), str)]
    return out


def _downstream_classes(prompt: dict, nid: str) -> set[str]:
    """class_types of every node fed (directly or not) by node ``nid``."""
    consumers: dict[str, list[str]] = {}
    for cid, node in prompt.items():
        for value in node.get("inputs", {}).values():
            if is_link(value):
                consumers.setdefault(value[0], []).append(cid)
    seen: set[str] = set()
    todo = list(consumers.get(nid, []))
    while todo:
        cid = todo.pop()
        if cid not in seen:
            seen.add(cid)
            todo += consumers.get(cid, [])
    return {prompt[c]["class_type"] for c in seen}


def _palette_inputs(prompt: dict, negative: bool) -> list[Target]:
    found = _literal_inputs(prompt, ["palette"], lambda n, d: d["class_type"] == "PaletteInput")
    return [t for t in found if ("NegativePalette" in _downstream_classes(prompt, t.node_id)) == negative]


def _prompt_text(prompt: dict, negative: bool) -> list[Target]:
    pos = _upstream(prompt, _conditioning_roots(prompt, "positive"), "positive")
    if not negative:
        return _text_targets(prompt, pos)
    neg = _upstream(prompt, _conditioning_roots(prompt, "negative"), "negative")
    return _text_targets(prompt, neg - pos)


def _latent_size(name: str) -> Callable[[dict], list[Target]]:
    return lambda p: _literal_inputs(p, [name], lambda n, d: "batch_size" in d.get("inputs", {}))


# column -> (finder, what it looks for: said when nothing is found)
FRIENDLY: dict[str, tuple[Callable[[dict], list[Target]], str]] = {
    "prompt": (lambda p: _prompt_text(p, False), "a text encoder (CLIPTextEncode) on a sampler's positive input"),
    "negative_prompt": (lambda p: _prompt_text(p, True), "a text encoder on a sampler's negative input only"),
    "palette": (lambda p: _palette_inputs(p, False), "a PaletteInput node that does not feed a NegativePalette"),
    "negative_palette": (lambda p: _palette_inputs(p, True), "a PaletteInput node feeding a NegativePalette"),
    "seed": (lambda p: _literal_inputs(p, SEED_INPUTS), "a 'seed' or 'noise_seed' input (KSampler, RandomNoise)"),
    "steps": (lambda p: _literal_inputs(p, ["steps"]), "a 'steps' input (KSampler, BasicScheduler)"),
    "cfg": (lambda p: _literal_inputs(p, ["cfg"]), "a 'cfg' input (KSampler, CFGGuider)"),
    "denoise": (lambda p: _literal_inputs(p, ["denoise"]), "a 'denoise' input (KSampler, BasicScheduler)"),
    "width": (_latent_size("width"), "a latent/image size node with width and batch_size (EmptyLatentImage)"),
    "height": (_latent_size("height"), "a latent/image size node with height and batch_size (EmptyLatentImage)"),
    "weight": (
        lambda p: _literal_inputs(p, ["weight"], lambda n, d: d["class_type"] == "ApplyPaletteAdapter"),
        "an ApplyPaletteAdapter node",
    ),
    "negative_weight": (
        lambda p: _literal_inputs(p, ["weight"], lambda n, d: d["class_type"] == "NegativePalette"),
        "a NegativePalette node",
    ),
    "strength": (
        lambda p: _literal_inputs(p, ["strength"], lambda n, d: d["class_type"] in STRENGTH_CLASSES),
        "a PaletteRecolor, PaletteAlign or PaletteGuidance node",
    ),
    "image": (
        lambda p: _literal_inputs(p, ["image"], lambda n, d: d["class_type"] == "LoadImage"),
        "a LoadImage node",
    ),
}
RESERVED = ("name",)  # a job's label in file names and the report; written to no node


def resolve_friendly(prompt: dict, column: str) -> list[Target]:
    """The node input(s) a friendly column writes; a MappingError when there is none or a choice to make."""
    finder, wanted = FRIENDLY[column]
    found = _sorted(finder(prompt))
    nodes = {t.node_id for t in found}
    if not found:
        raise MappingError(
            f"column {column!r} maps to nothing: it looks for {wanted}, and this workflow has none. Remove the "
            "column or name an input explicitly as '<node id>.<input>'"
        )
    if len(nodes) > 1:
        names = ", ".join(describe(prompt, t) for t in found)
        raise MappingError(
            f"column {column!r} is ambiguous: it could be {names}. Use one of those as the column name instead"
        )
    return found


def _find_node(prompt: dict, ref: str, column: str) -> str:
    if ref in prompt:
        return ref
    for label, of in (("title", lambda n: title(prompt, n)), ("class_type", lambda n: prompt[n]["class_type"])):
        hits = [n for n in prompt if of(n) == ref]
        if len(hits) == 1:
            return hits[0]
        if len(hits) > 1:
            raise MappingError(
                f"column {column!r}: {len(hits)} nodes have the {label} {ref!r} (ids {', '.join(hits)}); "
                f"use the node id, e.g. '{hits[0]}.{column.rsplit('.', 1)[1]}'"
            )
    listing = ", ".join(f"{n} {title(prompt, n)!r}" for n in prompt)
    raise MappingError(f"column {column!r}: no node has the id, title or class_type {ref!r}; nodes: {listing}")


def resolve_explicit(prompt: dict, column: str) -> Target:
    """The input named by ``<node id | title | class_type>.<input>`` (a title may itself contain dots)."""
    ref, _, name = column.rpartition(".")
    if not ref or not name:
        raise MappingError(f"column {column!r}: expected '<node id or title>.<input>'")
    nid = _find_node(prompt, ref, column)
    inputs = prompt[nid].get("inputs", {})
    if name not in inputs:
        raise MappingError(
            f"column {column!r}: node {nid} ({prompt[nid]['class_type']}) has no input {name!r}; "
            f"its inputs are {', '.join(sorted(inputs)) or 'none'}"
        )
    if is_link(inputs[name]):
        src = inputs[name][0]
        raise MappingError(
            f"column {column!r}: input {name!r} of node {nid} is connected to node {src} "
            f"({prompt[src]['class_type']}); set a value on that node instead"
        )
    return Target(nid, name)


def resolve_column(prompt: dict, column: str) -> list[Target]:
    """Where a jobs column writes: a friendly name, or an explicit ``<node>.<input>``."""
    if column in FRIENDLY:
        return resolve_friendly(prompt, column)
    if "." in column:
        return [resolve_explicit(prompt, column)]
    raise MappingError(
        f"column {column!r} maps to nothing: it is not one of {', '.join(sorted(FRIENDLY) + list(RESERVED))} "
        "and not an explicit '<node id or title>.<input>'"
    )


def resolve_columns(prompt: dict, columns: Iterable[str]) -> dict[str, list[Target]]:
    """Every column's targets; all problems at once, and two columns writing one input is an error too."""
    out: dict[str, list[Target]] = {}
    problems: list[str] = []
    for column in columns:
        if column in RESERVED:
            continue
        try:
            out[column] = resolve_column(prompt, column)
        except MappingError as e:
            problems.append(str(e))
    owners: dict[Target, str] = {}
    for column, targets in out.items():
        for t in targets:
            if t in owners:
                problems.append(f"columns {owners[t]!r} and {column!r} both write {describe(prompt, t)}")
            owners[t] = column
    if problems:
        raise MappingError("\n".join(problems))
    return out


def coerce(value: object, current: object, where: str) -> object:
    """``value`` converted to the type of the input's current literal (CSV cells arrive as text)."""
    if isinstance(current, bool):
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in ("true", "1", "yes", "on"):
            return True
        if text in ("false", "0", "no", "off"):
            return False
        raise QueueInputError(f"{where}: {value!r} is not a boolean (true/false)")
    if isinstance(current, int):
        if isinstance(value, bool):
            raise QueueInputError(f"{where}: {value!r} is not an integer")
        try:
            number = float(value) if not isinstance(value, int) else value
        except (TypeError, ValueError):
            raise QueueInputError(f"{where}: {value!r} is not an integer") from None
        if isinstance(number, float) and not number.is_integer():
            raise QueueInputError(f"{where}: {value!r} is not an integer")
        return int(value) if isinstance(value, str) and value.strip().lstrip("+-").isdigit() else int(number)
    if isinstance(current, float):
        try:
            return float(value)
        except (TypeError, ValueError):
            raise QueueInputError(f"{where}: {value!r} is not a number") from None
    if isinstance(current, str):
        if isinstance(value, list) and all(isinstance(x, str) for x in value):
            return ", ".join(value)  # a JSONL palette given as a list of hex strings
        if isinstance(value, (dict, list)):
            raise QueueInputError(f"{where}: expected text, got {type(value).__name__}")
        return str(value)
    return value


def patch(prompt: dict, values: dict[Target, object]) -> dict:
    """A deep copy of ``prompt`` with each target input set to its value."""
    out = copy.deepcopy(prompt)
    for target, value in values.items():
        out[target.node_id]["inputs"][target.input] = value
    return out
