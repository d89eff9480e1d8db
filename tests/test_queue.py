"""Batch queue CLI (palette_queue): column mapping on real API prompts, jobs files, resume logic, report.

Host-independent. The resume logic is exercised against a simulated ComfyUI that keeps the queue and
history semantics of ComfyUI's execution.PromptQueue (a prompt is in the queue, or running, or in the
history, never in none of them; a restart empties all three) and fails the way the real one does
(connection refused while down, a lost reply after the server took the prompt); test_queue_comfyui.py
runs the same CLI against a real server.
"""

from __future__ import annotations

import copy
import csv
import io
import json
import random
import string
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from PIL import Image

from palette_core.distance import palette_emd
from palette_core.palette import Palette
from palette_core.render import palette_stripes
from palette_queue import cli
from palette_queue.client import format_rejection
from palette_queue.errors import MappingError, PromptPartlyRejected, QueueInputError, ServerUnavailable
from palette_queue.jobs import parse_csv, parse_json_list, parse_jsonl, plan_jobs, prompt_key, read_jobs
from palette_queue.report import SheetLayout, report_rows, write_reports
from palette_queue.runner import Options, Progress, Runner
from palette_queue.state import (
    DONE,
    FAIL,
    FAILED,
    FINISH,
    REQUEUE,
    STATE_FILE,
    WAIT,
    State,
    failure_message,
    output_images,
    reconcile,
)
from palette_queue.workflow import Target, check_prompt, load_prompt, patch, resolve_column, resolve_columns

REPO = Path(__file__).resolve().parents[1]
COLORIZE = REPO / "example_workflows" / "api" / "colorize_with_palette.api.json"


def colorize() -> dict:
    return load_prompt(COLORIZE)


def adapter_prompt() -> dict:
    """txt2img with the Palette-Adapter, a positive palette through EntropyDistanceControl and a negative one."""
    return check_prompt(
        {
            "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "random_sdxl.safetensors"}},
            "6": {
                "class_type": "CLIPTextEncode",
                "inputs": {"text": "a poster of a lighthouse", "clip": ["4", 1]},
                "_meta": {"title": "Positive"},
            },
            "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": ["4", 1]}},
            "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 1024, "height": 1024, "batch_size": 1}},
            "10": {"class_type": "PaletteAdapterLoader", "inputs": {"adapter_name": "untrained.safetensors"}},
            "11": {"class_type": "PaletteInput", "inputs": {"palette": "#e63946:2, #f1faee, #1d3557"}},
            "13": {
                "class_type": "EntropyDistanceControl",
                "inputs": {
                    "condition": ["11", 0],
                    "entropy_mode": "relative",
                    "entropy": -2.0,
                    "entropy_reference": 7.0,
                    "distance_mode": "off",
                    "distance": 0.2,
                    "distance_reference": 0.6,
                },
            },
            "14": {
                "class_type": "PaletteInput",
                "inputs": {"palette": "#808080"},
                "_meta": {"title": "Unwanted colours"},
            },
            "15": {"class_type": "NegativePalette", "inputs": {"palette": ["14", 0], "weight": 0.3}},
            "12": {
                "class_type": "ApplyPaletteAdapter",
                "inputs": {
                    "model": ["4", 0],
                    "adapter": ["10", 0],
                    "condition": ["13", 0],
                    "weight": 1.0,
                    "start_percent": 0.0,
                    "end_percent": 1.0,
                    "blocks": "from file",
                    "negative": ["15", 0],
                },
            },
            "3": {
                "class_type": "KSampler",
                "inputs": {
                    "model": ["12", 0],
                    "seed": 7,
                    "steps": 20,
                    "cfg": 5.0,
                    "sampler_name": "euler",
                    "scheduler": "normal",
                    "positive": ["6", 0],
                    "negative": ["7", 0],
                    "latent_image": ["5", 0],
                    "denoise": 1.0,
                },
            },
            "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
            "9": {"class_type": "SaveImage", "inputs": {"images": ["8", 0], "filename_prefix": "batch"}},
        }
    )


def preview_prompt() -> dict:
    """The checkpoint-free workflow of the integration test: PaletteInput -> PalettePreview -> SaveImage."""
    return check_prompt(
        {
            "1": {"class_type": "PaletteInput", "inputs": {"palette": "#ff0000, #00ff00"}},
            "2": {"class_type": "PalettePreview", "inputs": {"palette": ["1", 0]}},
            "3": {
                "class_type": "SaveImage",
                "inputs": {"images": ["2", 0], "filename_prefix": "q"},
                "_meta": {"title": "Save"},
            },
        }
    )


def targets(prompt: dict, column: str) -> list[str]:
    return [t.column for t in resolve_column(prompt, column)]


# --------------------------------------------------------------------------------------------------
# Column mapping


def test_friendly_columns_on_the_colorize_workflow():
    p = colorize()
    assert targets(p, "prompt") == ["3.text"]  # "Positive Prompt", on KSampler 7's positive input
    assert targets(p, "negative_prompt") == ["4.text"]
    assert targets(p, "palette") == ["6.palette"]
    assert targets(p, "seed") == ["7.seed"]
    assert targets(p, "steps") == ["7.steps"]
    assert targets(p, "cfg") == ["7.cfg"]
    assert targets(p, "denoise") == ["7.denoise"]
    assert targets(p, "strength") == ["9.strength"]
    assert targets(p, "image") == ["2.image"]


@pytest.mark.parametrize(
    ("column", "says"),
    [
        ("negative_palette", "PaletteInput node feeding a NegativePalette"),
        ("width", "EmptyLatentImage"),
        ("weight", "ApplyPaletteAdapter"),
        ("negative_weight", "NegativePalette"),
    ],
)
def test_a_friendly_column_with_no_node_is_an_error_naming_it(column, says):
    with pytest.raises(MappingError, match=rf"column '{column}' maps to nothing.*{says}"):
        resolve_column(colorize(), column)


def test_friendly_columns_on_an_adapter_prompt():
    p = adapter_prompt()
    assert targets(p, "prompt") == ["6.text"]
    assert targets(p, "negative_prompt") == ["7.text"]
    assert targets(p, "palette") == ["11.palette"]  # through EntropyDistanceControl to ApplyPaletteAdapter
    assert targets(p, "negative_palette") == ["14.palette"]  # feeds NegativePalette
    assert targets(p, "weight") == ["12.weight"]
    assert targets(p, "negative_weight") == ["15.weight"]
    assert targets(p, "width") == ["5.width"] and targets(p, "height") == ["5.height"]
    assert targets(p, "seed") == ["3.seed"]


def test_explicit_columns_by_id_title_and_class_type():
    p = colorize()
    assert resolve_column(p, "7.sampler_name") == [Target("7", "sampler_name")]
    assert resolve_column(p, "Positive Prompt.text") == [Target("3", "text")]
    assert resolve_column(p, "KSampler (denoise 0.6).seed") == [Target("7", "seed")]  # a title with a dot
    assert resolve_column(p, "PaletteRecolor.matching") == [Target("9", "matching")]


@pytest.mark.parametrize(
    ("column", "message"),
    [
        ("9.palette", r"connected to node 6 \(PaletteInput\); set a value on that node"),
        ("7.nope", r"node 7 \(KSampler\) has no input 'nope'; its inputs are cfg, denoise"),
        ("Nobody.text", r"no node has the id, title or class_type 'Nobody'.*3 'Positive Prompt'"),
        ("colour", r"column 'colour' maps to nothing: it is not one of cfg"),
        (".text", r"expected '<node id or title>.<input>'"),
    ],
)
def test_explicit_column_errors(column, message):
    with pytest.raises(MappingError, match=message):
        resolve_column(colorize(), column)


def test_two_nodes_with_one_title_need_the_id():
    p = colorize()
    p["4"]["_meta"]["title"] = "Positive Prompt"
    with pytest.raises(MappingError, match=r"2 nodes have the title 'Positive Prompt' \(ids 3, 4\).*'3.text'"):
        resolve_column(p, "Positive Prompt.text")


def test_ambiguous_prompt_lists_the_candidates():
    p = adapter_prompt()
    p["16"] = {"class_type": "CLIPTextEncode", "inputs": {"text": "style", "clip": ["4", 1]}}
    p["17"] = {"class_type": "ConditioningCombine", "inputs": {"conditioning_1": ["6", 0], "conditioning_2": ["16", 0]}}
    p["3"]["inputs"]["positive"] = ["17", 0]
    with pytest.raises(MappingError, match=r"column 'prompt' is ambiguous: it could be '6.text' .*'16.text'"):
        resolve_column(p, "prompt")
    assert targets(p, "negative_prompt") == ["7.text"]


def test_two_samplers_make_seed_ambiguous():
    p = adapter_prompt()
    p["20"] = copy.deepcopy(p["3"])
    with pytest.raises(MappingError, match=r"'seed' is ambiguous: it could be '3.seed' \(KSampler.*'20.seed'"):
        resolve_column(p, "seed")


def test_controlnet_style_branch_node_keeps_positive_and_negative_apart():
    p = adapter_prompt()
    p["30"] = {
        "class_type": "ControlNetApplyAdvanced",
        "inputs": {
            "positive": ["6", 0],
            "negative": ["7", 0],
            "control_net": ["31", 0],
            "image": ["32", 0],
            "strength": 1.0,
            "start_percent": 0.0,
            "end_percent": 1.0,
        },
    }
    p["31"] = {"class_type": "ControlNetLoader", "inputs": {"control_net_name": "c.safetensors"}}
    p["32"] = {"class_type": "LoadImage", "inputs": {"image": "x.png"}}
    p["3"]["inputs"]["positive"] = ["30", 0]
    p["3"]["inputs"]["negative"] = ["30", 1]
    assert targets(p, "prompt") == ["6.text"]
    assert targets(p, "negative_prompt") == ["7.text"]


def test_sdxl_text_encoder_gets_both_texts():
    p = adapter_prompt()
    p["6"] = {
        "class_type": "CLIPTextEncodeSDXL",
        "inputs": {
            "clip": ["4", 1],
            "width": 1024,
            "height": 1024,
            "crop_w": 0,
            "crop_h": 0,
            "target_width": 1024,
            "target_height": 1024,
            "text_g": "a",
            "text_l": "a",
        },
    }
    assert targets(p, "prompt") == ["6.text_g", "6.text_l"]
    assert targets(p, "width") == ["5.width"]  # the encoder's width is not a latent size


def test_two_columns_writing_one_input_is_an_error():
    with pytest.raises(MappingError, match=r"columns 'seed' and '7.seed' both write '7.seed'"):
        resolve_columns(colorize(), ["seed", "7.seed"])


def test_every_mapping_problem_is_reported_at_once():
    with pytest.raises(MappingError) as e:
        resolve_columns(colorize(), ["name", "palette", "width", "weight", "bogus"])
    assert "'width'" in str(e.value) and "'weight'" in str(e.value) and "'bogus'" in str(e.value)
    assert "'palette'" not in str(e.value)


def test_ui_workflow_is_refused_with_the_export_hint():
    with pytest.raises(QueueInputError, match=r"UI workflow.*Export \(API\)"):
        load_prompt(REPO / "example_workflows" / "colorize_with_palette.json")


def test_prompt_body_and_broken_links():
    body = {"prompt": preview_prompt(), "client_id": "x"}
    assert check_prompt(body) == preview_prompt()
    broken = preview_prompt()
    broken["2"]["inputs"]["palette"] = ["99", 0]
    with pytest.raises(QueueInputError, match="links to node '99', which is missing"):
        check_prompt(broken)
    with pytest.raises(QueueInputError, match="no such workflow file"):
        load_prompt(REPO / "nope.api.json")


# --------------------------------------------------------------------------------------------------
# Jobs files and the plan


def test_plan_patches_coerces_and_leaves_the_workflow_alone(tmp_path):
    p = colorize()
    before = copy.deepcopy(p)
    rows = parse_csv(
        "name,palette,seed,cfg,prompt,7.sampler_name\n"
        'a,"#ff0000, #00ff00",12,4.5,"a red, green photo",euler\n'
        "b,#0000ff:2 #fff,13,,,\n"
    )
    plan = plan_jobs(p, rows, tmp_path / "jobs.csv")
    assert p == before
    a, b = plan.jobs
    assert a.prompt["6"]["inputs"]["palette"] == "#ff0000, #00ff00"
    assert a.prompt["7"]["inputs"]["seed"] == 12 and type(a.prompt["7"]["inputs"]["seed"]) is int
    assert a.prompt["7"]["inputs"]["cfg"] == 4.5
    assert a.prompt["3"]["inputs"]["text"] == "a red, green photo"
    assert a.prompt["7"]["inputs"]["sampler_name"] == "euler"
    assert b.prompt["7"]["inputs"]["cfg"] == before["7"]["inputs"]["cfg"]  # empty cell: the workflow's value
    assert b.prompt["3"]["inputs"]["text"] == before["3"]["inputs"]["text"]
    assert (a.seed, b.seed, a.palette, b.name) == (12, 13, "#ff0000, #00ff00", "b")
    assert a.key == prompt_key(a.prompt) != b.key
    changed = {(n, k) for n in p for k in p[n]["inputs"] if a.prompt[n]["inputs"][k] != p[n]["inputs"][k]}
    assert changed == {("6", "palette"), ("7", "seed"), ("7", "cfg"), ("3", "text"), ("7", "sampler_name")}


def test_keys_depend_on_the_prompt_not_on_row_order():
    p = colorize()
    rows = parse_csv("seed\n1\n2\n3\n")
    keys = [j.key for j in plan_jobs(p, rows).jobs]
    assert [j.key for j in plan_jobs(p, rows[::-1]).jobs] == keys[::-1]
    assert len(set(keys)) == 3


def test_without_a_palette_column_the_workflow_palette_is_the_jobs_palette():
    plan = plan_jobs(colorize(), parse_csv("seed\n5\n"))
    assert plan.jobs[0].palette == colorize()["6"]["inputs"]["palette"]
    assert plan.jobs[0].seed == 5


def test_bad_rows_are_all_reported_with_line_and_column(tmp_path):
    rows = parse_csv('name,palette,seed\nok,#ff0000,1\nx,"#ff0000, #zz",2\ny,#00ff00,two\nz,#0000ff,1.5\n')
    with pytest.raises(QueueInputError) as e:
        plan_jobs(colorize(), rows, tmp_path / "jobs.csv")
    msg = str(e.value)
    assert "jobs.csv line 3, column 'palette': bad palette" in msg and "#zz" in msg
    assert "jobs.csv line 4, column 'seed': 'two' is not an integer" in msg
    assert "jobs.csv line 5, column 'seed': '1.5' is not an integer" in msg


def test_negative_palette_is_validated_too():
    rows = parse_jsonl('{"palette": "#ff0000", "negative_palette": "#12345"}\n')
    with pytest.raises(QueueInputError, match="column 'negative_palette': bad palette"):
        plan_jobs(adapter_prompt(), rows)


def test_duplicate_jobs_are_refused():
    rows = parse_csv("name,seed\na,1\nb,2\nc,1\n")
    with pytest.raises(QueueInputError, match="line 4: the same job as line 2"):
        plan_jobs(colorize(), rows)


def test_jsonl_values_keep_their_types_and_palette_lists_are_joined():
    rows = parse_jsonl('{"palette": ["#ff0000", "#00ff00:3"], "seed": 3, "cfg": 7, "weight": null}\n\n')
    plan = plan_jobs(adapter_prompt(), rows)
    prompt = plan.jobs[0].prompt
    assert prompt["11"]["inputs"]["palette"] == "#ff0000, #00ff00:3"
    assert prompt["3"]["inputs"]["cfg"] == 7.0 and type(prompt["3"]["inputs"]["cfg"]) is float
    assert prompt["12"]["inputs"]["weight"] == 1.0  # null keeps the workflow's value


def test_image_column_uploads_local_files_under_a_content_name(tmp_path):
    Image.new("RGB", (4, 4), (10, 20, 30)).save(tmp_path / "grey.png")
    (tmp_path / "jobs.csv").write_text("image\ngrey.png\nalready_on_server.png\n")
    plan = plan_jobs(colorize(), read_jobs(tmp_path / "jobs.csv"), tmp_path / "jobs.csv")
    local, remote = plan.jobs
    name = local.prompt["2"]["inputs"]["image"]
    assert name.startswith("palette_queue_") and name.endswith(".png")
    assert local.uploads == {name: tmp_path / "grey.png"}
    assert remote.prompt["2"]["inputs"]["image"] == "already_on_server.png" and remote.uploads == {}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty file"),
        ("a,a\n1,2\n", "column 'a' appears more than once"),
        ("a,b\n1,2\n3\n", r"line 3: 1 fields, the header has 2"),
        ('a,b\n"x\ny",1\n1,2,3\n', r"line 4: 3 fields"),  # the multi-line cell counts as two lines
        ("a,,c\n1,2,3\n", "column 2 has no name"),
    ],
)
def test_csv_errors(text, message):
    with pytest.raises(QueueInputError, match=message):
        parse_csv(text)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"seed": 1}\n{"seed": \n', r"line 2: not valid JSON"),
        ("[1, 2]\n", r"line 1: expected a JSON object"),
        ('{"seed": {"a": 1}}\n', r"column 'seed': expected text, a number"),
    ],
)
def test_jsonl_errors(text, message):
    with pytest.raises(QueueInputError, match=message):
        parse_jsonl(text)


def test_read_jobs_files(tmp_path):
    (tmp_path / "j.csv").write_bytes("\ufeffname,seed\nx,1\n".encode())  # Excel's BOM
    assert read_jobs(tmp_path / "j.csv")[0].values == {"name": "x", "seed": "1"}
    (tmp_path / "j.json").write_text('[{"seed": 1}, {"seed": 2}]')
    assert [r.values["seed"] for r in read_jobs(tmp_path / "j.json")] == [1, 2]
    with pytest.raises(QueueInputError, match="unknown jobs file type '.txt'"):
        read_jobs(tmp_path / "j.txt")
    with pytest.raises(QueueInputError, match="no such jobs file"):
        read_jobs(tmp_path / "missing.csv")
    (tmp_path / "e.jsonl").write_text("\n\n")
    with pytest.raises(QueueInputError, match="no jobs in the file"):
        read_jobs(tmp_path / "e.jsonl")
    with pytest.raises(QueueInputError, match="expected a JSON list"):
        parse_json_list('{"seed": 1}')


COLUMN = st.text(string.ascii_letters + string.digits + "_.", min_size=1, max_size=8)
CELL = st.text(st.characters(blacklist_categories=("Cs",)), max_size=20)


@settings(max_examples=150, deadline=None)
@given(
    st.lists(COLUMN, min_size=1, max_size=5, unique=True).flatmap(
        lambda cols: st.tuples(
            st.just(cols), st.lists(st.lists(CELL, min_size=len(cols), max_size=len(cols)), max_size=6)
        )
    )
)
def test_csv_round_trip(table):
    header, cells = table
    buf = io.StringIO(newline="")
    w = csv.writer(buf)
    w.writerow(header)
    w.writerows(cells)
    got = [r.values for r in parse_csv(buf.getvalue())]
    want = [{h: c for h, c in zip(header, row) if c != ""} for row in cells if any(c.strip() for c in row)]
    assert got == want


SCALAR = st.one_of(
    st.text(max_size=20), st.integers(-(2**64), 2**64), st.floats(allow_nan=False, allow_infinity=False), st.booleans()
)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.dictionaries(st.text(min_size=1, max_size=8), st.one_of(SCALAR, st.none()), max_size=5), max_size=6))
def test_jsonl_round_trip(objects):
    text = "".join(json.dumps(o) + "\n" for o in objects)
    assert [r.values for r in parse_jsonl(text)] == [{k: v for k, v in o.items() if v is not None} for o in objects]
    assert [r.line for r in parse_jsonl(text)] == list(range(1, len(objects) + 1))


# --------------------------------------------------------------------------------------------------
# State and the resume decision, on history entries as the real server writes them

PID = "37723c65e04c407ebf772f42a570dab5"
SUCCESS = {
    "prompt": [0, PID],
    "outputs": {
        "3": {"images": [{"filename": "queue_00001_.png", "subfolder": "", "type": "output"}]},
        "12": {"images": [{"filename": "ComfyUI_temp_ab_00001_.png", "subfolder": "", "type": "temp"}]},
    },
    "status": {
        "status_str": "success",
        "completed": True,
        "messages": [
            ["execution_start", {"prompt_id": PID, "timestamp": 1795329110674}],
            ["execution_cached", {"nodes": [], "prompt_id": PID, "timestamp": 1795329110676}],
            ["execution_success", {"prompt_id": PID, "timestamp": 1795329110697}],
        ],
    },
    "meta": {"3": {"node_id": "3", "display_node": "3", "parent_node": None, "real_node_id": "3"}},
}
ERROR = {
    "prompt": [2, PID],
    "outputs": {},
    "status": {
        "status_str": "error",
        "completed": False,
        "messages": [
            ["execution_start", {"prompt_id": PID, "timestamp": 1795329111552}],
            [
                "execution_error",
                {
                    "prompt_id": PID,
                    "node_id": "3",
                    "node_type": "SaveImage",
                    "executed": ["1", "2"],
                    "exception_message": "**** ERROR: Saving image outside the output folder is not allowed.\n",
                    "exception_type": "Exception",
                    "traceback": ["  File ..."],
                    "current_inputs": {},
                    "current_outputs": [],
                },
            ],
        ],
    },
    "meta": {},
}
REJECTED = {
    "error": {
        "type": "prompt_outputs_failed_validation",
        "message": "Prompt outputs failed validation",
        "details": "",
        "extra_info": {},
    },
    "node_errors": {
        "1": {
            "errors": [
                {
                    "type": "custom_validation_failed",
                    "message": "Custom validation failed for node",
                    "details": 'palette - "#zz" is not a colour: expected #RGB, #RRGGBB or RRGGBB',
                    "extra_info": {"input_name": "palette"},
                }
            ],
            "dependent_outputs": ["3"],
            "class_type": "PaletteInput",
        }
    },
}


def test_reconcile_decisions():
    assert reconcile(PID, True, None) == (WAIT, None)
    assert reconcile(PID, False, None) == (REQUEUE, None)  # never sent, or lost in a restart
    assert reconcile(None, False, None) == (REQUEUE, None)
    assert reconcile(PID, False, SUCCESS) == (FINISH, None)
    action, message = reconcile(PID, False, ERROR)
    assert action == FAIL and message.startswith("SaveImage (node 3): **** ERROR: Saving image outside")


def test_history_entry_readers():
    assert output_images(SUCCESS) == [{"node": "3", "filename": "queue_00001_.png", "subfolder": "", "type": "output"}]
    interrupted = {
        "status": {
            "status_str": "error",
            "messages": [
                ["execution_interrupted", {"prompt_id": PID, "node_id": "3", "node_type": "KSampler", "executed": []}]
            ],
        }
    }
    assert failure_message(interrupted) == "interrupted on the server at node 3 (KSampler)"
    assert format_rejection(REJECTED) == (
        "Prompt outputs failed validation\n  node 1 (PaletteInput): Custom validation failed for node: "
        'palette - "#zz" is not a colour: expected #RGB, #RRGGBB or RRGGBB'
    )


def test_state_round_trip_is_atomic(tmp_path):
    s = State.load(tmp_path)
    js = s.job("abc", 1, "first")
    js.status, js.prompt_id, js.files = DONE, PID, ["images/a.png"]
    s.save()
    assert sorted(p.name for p in tmp_path.iterdir()) == [STATE_FILE]  # no temporary file left behind
    t = State.load(tmp_path)
    assert t.client_id == s.client_id and t.jobs == s.jobs
    (tmp_path / STATE_FILE).write_text('{"version": 1, "jobs": ')
    with pytest.raises(QueueInputError, match="unreadable state file"):
        State.load(tmp_path)


# --------------------------------------------------------------------------------------------------
# The runner against a simulated ComfyUI


class Crash(BaseException):
    """The CLI process dies here (nothing below it runs; only what is on disk survives)."""


OUTPUT_CLASSES = {"SaveImage", "PreviewImage"}


class SimulatedComfy:
    """ComfyUI's PromptQueue semantics: queue -> running -> history, one prompt at a time; restart empties all.

    While ``reject_invalid`` is set, a SaveImage whose prefix is "invalid" fails validation: the prompt is
    queued without that output (``node_errors`` in the answer, as ComfyUI's validate_prompt does).
    """

    def __init__(self):
        self.reject_invalid = True
        self.outputs: dict[str, list[str]] = {}  # prompt id -> outputs_to_execute
        self.queue: list[tuple[str, dict]] = []
        self.running: tuple[str, dict] | None = None
        self.history: dict[str, dict] = {}
        self.events: list[tuple[str, dict]] = []
        self.files: dict[str, bytes] = {}
        self.executions: list[str] = []  # job keys, one per finished execution
        self.downloaded: set[str] = set()
        self.violations: list[str] = []
        self.restarts = 0

    def restart(self) -> None:
        self.queue, self.running, self.history, self.events = [], None, {}, []
        self.restarts += 1

    def tick(self) -> None:
        if self.running is not None:
            pid, prompt = self.running
            key = prompt_key(prompt)
            self.executions.append(key)
            outputs = self.outputs[pid]
            if any(prompt[n]["inputs"]["filename_prefix"].startswith("..") for n in outputs):
                self.history[pid] = copy.deepcopy(ERROR)
            else:
                images = {}
                for n in outputs:
                    name = f"{prompt[n]['inputs']['filename_prefix']}_{len(self.files):05d}_.png"
                    self.files[name] = key.encode()
                    images[n] = {"images": [{"filename": name, "subfolder": "", "type": "output"}]}
                self.history[pid] = {
                    "outputs": images,
                    "status": {"status_str": "success", "completed": True, "messages": []},
                }
            self.history[pid]["prompt"] = [0, pid, copy.deepcopy(prompt), {}, list(outputs)]
            self.running = None
            self.events.append(("executing", {"node": None, "prompt_id": pid}))
        elif self.queue:
            self.running = self.queue.pop(0)
            self.events.append(("execution_start", {"prompt_id": self.running[0]}))
            self.events.append(("progress", {"prompt_id": self.running[0], "node": "2", "value": 1, "max": 1}))

    def submit(self, prompt: dict, pid: str) -> dict:
        """Queue the prompt; its ``node_errors`` (outputs dropped at validation)."""
        key = prompt_key(prompt)
        if key in self.downloaded:
            self.violations.append(f"job {key} queued again after its images were downloaded")
        live = [p for p, q in self.queue + ([self.running] if self.running else []) if prompt_key(q) == key]
        done = [
            p
            for p, e in self.history.items()
            if e["status"]["status_str"] == "success"
            and self.files.get(e["outputs"]["3"]["images"][0]["filename"]) == key.encode()
        ]
        if live or done:
            self.violations.append(f"job {key} queued again while the server has it ({live + done})")
        invalid = {
            n: {"errors": [{"message": "Value not in list", "details": "prefix 'invalid'"}], "class_type": "SaveImage"}
            for n, node in prompt.items()
            if self.reject_invalid and node["inputs"].get("filename_prefix") == "invalid"
        }
        self.outputs[pid] = [
            n for n, node in prompt.items() if node["class_type"] in OUTPUT_CLASSES and n not in invalid
        ]
        self.queue.append((pid, copy.deepcopy(prompt)))
        return invalid

    def cancel(self, pid: str) -> None:
        self.queue = [(p, q) for p, q in self.queue if p != pid]


class SimulatedClient:
    """The runner's client over a SimulatedComfy; ``script`` makes call n crash the CLI before it
    ("crash") or after it took effect ("crash_after"), restart the server (which also fails that call),
    or lose the reply of a call that did take effect ("lost_reply", e.g. a POST /prompt the server took)."""

    url = "http://sim:8188"

    def __init__(self, server: SimulatedComfy, script: dict[int, str], ticks: random.Random | None = None):
        self.server, self.script, self.calls, self.ticks = server, script, 0, ticks

    def _call(self) -> str | None:
        self.calls += 1
        for _ in range(1 if self.ticks is None else self.ticks.choice([0, 1, 1, 2])):  # server time between calls
            self.server.tick()
        action = self.script.get(self.calls)
        if action == "crash":
            raise Crash
        if action == "restart":
            self.server.restart()
            raise ServerUnavailable("connection refused (restarting)")
        return action

    def connect(self):
        self._call()

    def close(self):
        pass

    # the checks below change nothing on the server, so they are not counted as calls: the scripts and the
    # hypothesis examples keep their meaning
    def check_server(self):
        return {"system": {"comfyui_version": "simulated"}, "devices": []}

    def output_classes(self, classes):
        return set(classes) & OUTPUT_CLASSES

    def cancel(self, pid):
        self._call()
        self.server.cancel(pid)

    def queue_ids(self):
        self._call()
        return {p for p, _ in self.server.queue} | ({self.server.running[0]} if self.server.running else set())

    def history(self, pid):
        self._call()
        return copy.deepcopy(self.server.history.get(pid))

    @staticmethod
    def _after(action: str | None) -> None:
        if action == "crash_after":
            raise Crash
        if action == "lost_reply":
            raise ServerUnavailable("connection reset after the server acted")

    def submit(self, prompt, pid):
        action = self._call()
        node_errors = self.server.submit(prompt, pid)
        self._after(action)
        if node_errors:
            raise PromptPartlyRejected(format_rejection({"node_errors": node_errors}, "outputs failed validation"))

    def upload(self, local, name):
        self._call()

    def download(self, image, dest):
        action = self._call()
        data = self.server.files[image["filename"]]
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(data)
        self.server.downloaded.add(data.decode())
        self._after(action)

    def event(self, timeout):
        self._call()
        return self.server.events.pop(0) if self.server.events else None


def run_until_finished(
    plan, out: Path, server: SimulatedComfy, script: dict[int, str], window=2, hook=None, ticks=None
):
    """Run, and after each crash run again from the state on disk (as re-running the command does).

    ``poll`` is long: the simulated websocket answers at once, so the calls made do not depend on timing.
    """
    client = SimulatedClient(server, script, ticks)
    options = Options(window=window, retry_timeout=1e9, poll=60)
    for _ in range(len(script) + 2):
        state = State.load(out)
        progress = Progress(len(plan.jobs), 0, tty=False)
        runner = Runner(plan, state, client, out, options, progress, hook and hook(client), sleep=lambda s: None)
        try:
            return runner.run(), State.load(out)
        except Crash:
            continue
    raise AssertionError("the batch did not finish")


def sim_plan(n: int, failing: frozenset = frozenset()):
    palettes = ["#ff0000", "#00ff00", "#0000ff", "#ffff00", "#00ffff", "#ff00ff", "#ffffff", "#000000"]
    rows = parse_jsonl(
        "".join(
            json.dumps({"name": f"j{i}", "palette": palettes[i], "3.filename_prefix": "../x" if i in failing else "q"})
            + "\n"
            for i in range(n)
        )
    )
    return plan_jobs(preview_prompt(), rows)


def check_outcome(plan, out, server, state, summary, failing=frozenset()):
    assert server.violations == []
    assert summary.pending == 0 and summary.failed == len(failing)
    for job in plan.jobs:
        js = state.jobs[job.key]
        if job.number - 1 in failing:
            assert js.status == FAILED and "Saving image outside" in js.error
            continue
        assert js.status == DONE and len(js.files) == 1
        assert (out / js.files[0]).read_bytes() == job.key.encode()  # this job's own image
    images = list((out / "images").iterdir()) if (out / "images").exists() else []
    assert len(images) == len(plan.jobs) - len(failing)


def test_runner_plain_batch_with_a_failure(tmp_path):
    plan = sim_plan(4, failing=frozenset({1}))
    server = SimulatedComfy()
    summary, state = run_until_finished(plan, tmp_path, server, {})
    check_outcome(plan, tmp_path, server, state, summary, frozenset({1}))
    assert sorted(server.executions) == sorted(j.key for j in plan.jobs)  # each exactly once
    assert not summary.ok


def test_a_job_finished_while_the_cli_was_dead_is_downloaded_not_rerun(tmp_path):
    plan = sim_plan(3)
    server = SimulatedComfy()
    # call 1 connect, 2 submit j0, 3 submit j1, 4+ events...: crash while both are on the server
    summary, state = run_until_finished(plan, tmp_path, server, {4: "crash"})
    check_outcome(plan, tmp_path, server, state, summary)
    assert sorted(server.executions) == sorted(j.key for j in plan.jobs)


def test_a_restart_requeues_only_what_the_server_lost(tmp_path):
    plan = sim_plan(4)
    server = SimulatedComfy()

    def restart_after_the_first_job(client):
        def hook(job):
            if job.number == 1:
                client.script[client.calls + 1] = "restart"

        return hook

    summary, state = run_until_finished(plan, tmp_path, server, {}, hook=restart_after_the_first_job)
    check_outcome(plan, tmp_path, server, state, summary)
    assert server.restarts == 1
    assert server.executions.count(plan.jobs[0].key) == 1  # downloaded before the restart: never run again
    assert state.jobs[plan.jobs[1].key].attempts == 2  # on the server when it restarted: queued exactly once more


def test_a_lost_reply_does_not_queue_twice(tmp_path):
    plan = sim_plan(2)
    server = SimulatedComfy()
    summary, state = run_until_finished(plan, tmp_path, server, {2: "lost_reply"})
    check_outcome(plan, tmp_path, server, state, summary)
    assert sorted(server.executions) == sorted(j.key for j in plan.jobs)
    assert all(js.attempts == 1 for js in state.jobs.values())


@pytest.mark.parametrize("action", ["crash", "crash_after", "restart", "lost_reply"])
def test_one_incident_at_every_call(tmp_path, action):
    """A clean run of 3 jobs (one failing) makes N client calls; put the incident at each of them in turn."""
    plan = sim_plan(3, failing=frozenset({1}))
    probe = SimulatedComfy()
    clean = SimulatedClient(probe, {})
    Runner(plan, State.load(tmp_path), clean, tmp_path, Options(poll=60), Progress(3, 0, tty=False)).run()
    assert clean.calls > 15
    for k in range(1, clean.calls + 1):
        out = tmp_path / f"{action}{k}"
        out.mkdir()
        server = SimulatedComfy()
        summary, state = run_until_finished(plan, out, server, {k: action})
        check_outcome(plan, out, server, state, summary, frozenset({1}))
        if action in ("crash", "crash_after", "lost_reply"):  # the server kept everything: each job ran once
            assert sorted(set(server.executions)) == sorted(j.key for j in plan.jobs)
            done = [j.key for j in plan.jobs if j.number != 2]
            assert all(server.executions.count(key) == 1 for key in done), (k, server.executions)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    n=st.integers(1, 5),
    window=st.integers(1, 3),
    failing=st.frozensets(st.integers(0, 4), max_size=2),
    script=st.dictionaries(
        st.integers(1, 40), st.sampled_from(["crash", "crash_after", "restart", "lost_reply"]), max_size=5
    ),
    tick_seed=st.integers(0, 2**16),
)
# found by CI: the CLI crashed after downloading j2's image, then the server restarted and forgot j2
@example(n=3, window=1, failing=frozenset({0, 1}), script={21: "crash_after", 22: "restart"}, tick_seed=242)
def test_any_crash_or_restart_loses_nothing_and_repeats_nothing(
    tmp_path_factory, n, window, failing, script, tick_seed
):
    failing = frozenset(i for i in failing if i < n)
    out = tmp_path_factory.mktemp("sim")
    plan = sim_plan(n, failing)
    server = SimulatedComfy()
    summary, state = run_until_finished(plan, out, server, script, window, ticks=random.Random(tick_seed))
    check_outcome(plan, out, server, state, summary, failing)
    # a job runs again only when a restart took it (or a failure was retried after a crash)
    assert len(server.executions) <= n + server.restarts * window + script_crashes(script) * len(failing)


def script_crashes(script):
    return sum(a.startswith("crash") for a in script.values())


def test_rerunning_a_finished_batch_queues_nothing(tmp_path):
    plan = sim_plan(3, failing=frozenset({2}))
    server = SimulatedComfy()
    run_until_finished(plan, tmp_path, server, {})
    calls_before = len(server.executions)
    client = SimulatedClient(server, {})
    options = Options(poll=60, retry_failed=False)
    summary = Runner(plan, State.load(tmp_path), client, tmp_path, options, Progress(3, 3, tty=False)).run()
    assert len(server.executions) == calls_before and summary.done == 2 and summary.failed == 1
    summary = Runner(plan, State.load(tmp_path), client, tmp_path, Options(poll=60), Progress(3, 2, tty=False)).run()
    assert server.executions[calls_before:] == [plan.jobs[2].key]  # only the failed job, retried


def test_a_rejected_prompt_fails_that_job_only(tmp_path):
    from palette_queue.errors import PromptRejected

    plan = sim_plan(3)
    server = SimulatedComfy()
    client = SimulatedClient(server, {})
    submit = client.submit

    def reject_second(prompt, pid):
        if prompt_key(prompt) == plan.jobs[1].key:
            client._call()
            raise PromptRejected(format_rejection(REJECTED))
        submit(prompt, pid)

    client.submit = reject_second
    summary = Runner(plan, State.load(tmp_path), client, tmp_path, Options(poll=60), Progress(3, 0, tty=False)).run()
    state = State.load(tmp_path)
    assert (summary.done, summary.failed) == (2, 1)
    assert state.jobs[plan.jobs[1].key].error.startswith("rejected by the server: Prompt outputs failed validation")


def two_output_plan(second_prefixes: list[str]):
    """Jobs of a prompt with two SaveImage outputs (3 and 4); a job's output 4 is dropped when its prefix is invalid."""
    prompt = preview_prompt()
    prompt["4"] = {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "second"}}
    rows = parse_jsonl(
        "".join(json.dumps({"name": f"j{i}", "4.filename_prefix": p}) + "\n" for i, p in enumerate(second_prefixes))
    )
    return plan_jobs(check_prompt(prompt), rows)


def test_a_prompt_queued_without_an_invalid_output_fails_and_a_rerun_redoes_it(tmp_path):
    plan = two_output_plan(["second", "invalid"])
    good, partial = plan.jobs
    server = SimulatedComfy()
    summary, state = run_until_finished(plan, tmp_path, server, {})
    assert (summary.done, summary.failed) == (1, 1)
    assert len(state.jobs[good.key].files) == 2  # both outputs of the good job
    js = state.jobs[partial.key]
    assert js.status == FAILED and js.files == []
    assert js.error.startswith("the server dropped part of the workflow: outputs failed validation")
    assert "node 4 (SaveImage): Value not in list: prefix 'invalid'" in js.error
    assert js.prompt_id not in {p for p, _ in server.queue}  # taken off the queue: it would run for nothing
    assert sorted(p.name for p in (tmp_path / "images").iterdir()) == sorted(
        Path(f).name for f in state.jobs[good.key].files
    )

    server.reject_invalid = False  # e.g. the missing model is installed now
    summary, state = run_until_finished(plan, tmp_path, server, {})
    assert summary.ok and state.jobs[partial.key].attempts == 2 and len(state.jobs[partial.key].files) == 2
    assert server.executions.count(good.key) == 1


def test_a_partly_queued_prompt_whose_answer_was_lost_is_not_done(tmp_path):
    """The answer with node_errors never arrives: the history entry's outputs_to_execute gives it away."""
    plan = two_output_plan(["invalid"])
    server = SimulatedComfy()
    summary, state = run_until_finished(plan, tmp_path, server, {2: "lost_reply"})  # call 2: POST /prompt
    js = state.jobs[plan.jobs[0].key]
    assert summary.failed == 1 and js.status == FAILED and js.files == []
    assert "the server ran only part of the workflow: it dropped output node(s) 4 (SaveImage)" in js.error
    assert server.executions == [plan.jobs[0].key] and not (tmp_path / "images").exists()


def test_the_server_staying_away_ends_with_server_unavailable(tmp_path):
    plan = sim_plan(1)

    class Down(SimulatedClient):
        def connect(self):
            raise ServerUnavailable("connection refused")

    slept = []
    runner = Runner(
        plan,
        State.load(tmp_path),
        Down(SimulatedComfy(), {}),
        tmp_path,
        Options(retry_timeout=0.0),
        Progress(1, 0, tty=False),
        sleep=slept.append,
        clock=lambda: 0.0,  # only the sleeps move time
    )
    with pytest.raises(ServerUnavailable, match="gave up after 0 s without the server: connection refused"):
        runner.run()
    assert slept == [1.0]  # one backoff, then the outage is longer than --retry-timeout


# --------------------------------------------------------------------------------------------------
# Report and contact sheet


def stripes_png(palette: Palette, path: Path, size=(64, 256)) -> np.ndarray:
    pixels = (palette_stripes(palette.colors, palette.weights, *size) * 255).round().byte().numpy()
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return pixels


def test_report_values_and_contact_sheet(tmp_path):
    plan = sim_plan(3, failing=frozenset({2}))
    state = State.load(tmp_path)
    other = Palette.parse("#777777")
    for job in plan.jobs:
        js = state.job(job.key, job.number, job.name)
        js.prompt_id, js.attempts = f"pid{job.number}", 1
        if job.number == 3:
            js.status, js.error = FAILED, "SaveImage (node 3): Saving image outside the output folder"
            continue
        js.status, js.files = DONE, [f"images/{job.number}.png"]
        # job 1's image shows its own palette, job 2's a grey one
        stripes_png(Palette.parse(job.palette) if job.number == 1 else other, tmp_path / js.files[0])
    state.save()
    rows = report_rows(plan, state, tmp_path)
    assert [(r["job"], r["status"], r["file"]) for r in rows] == [
        (1, "done", "images/1.png"),
        (2, "done", "images/2.png"),
        (3, "failed", None),
    ]
    for r, job in zip(rows[:2], plan.jobs):
        image = torch.from_numpy(np.array(Image.open(tmp_path / r["file"]))).float() / 255
        p = Palette.parse(job.palette)
        assert r["palette_emd"] == pytest.approx(float(palette_emd(image, p.colors, p.weights)), abs=1e-6)
        assert (r["width"], r["height"]) == (256, 64)
    assert rows[0]["palette_emd"] < 1e-9  # a one-colour image of a one-colour palette
    assert rows[1]["palette_emd"] == pytest.approx(
        float(np.linalg.norm([0x77 / 255, 0x77 / 255 - 1, 0x77 / 255])), abs=1e-4
    )

    paths = write_reports(plan, state, tmp_path, "wf.api.json", "jobs.jsonl", thumb=64)
    table = list(csv.DictReader(open(paths["csv"], newline="")))
    assert [t["status"] for t in table] == ["done", "done", "failed"]
    assert table[1]["palette_emd"] == str(rows[1]["palette_emd"]) and table[0]["3.filename_prefix"] == "q"
    assert json.loads(paths["json"].read_text())[2]["error"].startswith("SaveImage (node 3)")
    md = paths["md"].read_text()
    assert "3 jobs, 2 done, 1 failed" in md and "job 3 (line 3): SaveImage (node 3)" in md and "contact_sheet.png" in md

    sheet = np.array(Image.open(paths["sheet"]).convert("RGB"))
    layout = SheetLayout(3, 64)
    assert sheet.shape[:2] == layout.size[::-1]
    for i, job in enumerate(plan.jobs):
        left, top, right, bottom = layout.stripe_box(i)
        colour = Palette.parse(job.palette).colors[0].mul(255).round().int().tolist()
        assert sheet[(top + bottom) // 2, (left + right) // 2].tolist() == colour  # the job's palette stripe
    x, y = layout.origin(1)
    assert sheet[y + 32, x + 32].tolist() == [0x77] * 3  # job 2's thumbnail (grey image)
    x, y = layout.origin(2)
    assert sheet[y + 5, x + 5].tolist() == [200, 200, 200]  # the failed job's tile


# --------------------------------------------------------------------------------------------------
# Command line


def test_dry_run_prints_the_mapping(tmp_path, capsys):
    jobs = tmp_path / "jobs.csv"
    jobs.write_text('name,palette,seed,KSampler (denoise 0.6).steps\na,"#ff0000, #00ff00",1,20\n')
    assert cli.main([str(COLORIZE), str(jobs), "--out", str(tmp_path / "out"), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "palette -> '6.palette' (PaletteInput 'Palette')" in out
    assert "KSampler (denoise 0.6).steps -> '7.steps'" in out
    assert "job 1 (a): key" in out
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("workflow", "jobs_text", "message"),
    [
        (COLORIZE, "palette\n#ggg\n", "jobs.csv line 2, column 'palette': bad palette"),
        (COLORIZE, "width\n512\n", "column 'width' maps to nothing"),
        (REPO / "example_workflows" / "colorize_with_palette.json", "seed\n1\n", "UI workflow"),
        (REPO / "missing.api.json", "seed\n1\n", "no such workflow file"),
    ],
)
def test_bad_input_exits_2_before_queueing(tmp_path, capsys, workflow, jobs_text, message):
    jobs = tmp_path / "jobs.csv"
    jobs.write_text(jobs_text)
    assert cli.main([str(workflow), str(jobs), "--out", str(tmp_path / "out"), "--server", "127.0.0.1:9"]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_unreachable_server_exits_3_and_keeps_the_state(tmp_path, capsys):
    jobs = tmp_path / "jobs.csv"
    jobs.write_text("seed\n1\n")
    args = [str(COLORIZE), str(jobs), "--out", str(tmp_path / "out"), "--server", "127.0.0.1:9", "--retry-timeout", "0"]
    assert cli.main(args) == 3
    assert "run the same command again to resume" in capsys.readouterr().err
    assert (tmp_path / "out" / STATE_FILE).exists()


def test_a_second_run_on_the_same_folder_is_refused(tmp_path, capsys):
    from palette_queue.state import folder_lock

    jobs = tmp_path / "jobs.csv"
    jobs.write_text("seed\n1\n")
    (tmp_path / "out").mkdir()
    with folder_lock(tmp_path / "out"):
        assert cli.main([str(COLORIZE), str(jobs), "--out", str(tmp_path / "out"), "--server", "127.0.0.1:9"]) == 2
    assert "another palette_queue run is using this folder" in capsys.readouterr().err


def test_node_titles_do_not_change_the_key():
    p = colorize()
    q = copy.deepcopy(p)
    q["7"]["_meta"]["title"] = "renamed"
    assert prompt_key(p) == prompt_key(q)
    q["7"]["inputs"]["seed"] += 1
    assert prompt_key(p) != prompt_key(q)


def test_patch_is_a_copy():
    p = preview_prompt()
    q = patch(p, {Target("1", "palette"): "#000000"})
    assert p["1"]["inputs"]["palette"] == "#ff0000, #00ff00" and q["1"]["inputs"]["palette"] == "#000000"
