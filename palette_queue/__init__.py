"""Batch queue for ComfyUI: run an API-format workflow once per row of a CSV/JSONL jobs file (issue 8).

``python -m palette_queue WORKFLOW.api.json JOBS.csv --out DIR`` maps friendly columns (prompt, palette,
seed, ...) or explicit ``<node>.<input>`` columns onto the workflow, queues each job on a ComfyUI server,
follows progress over the websocket, downloads the images, resumes after a crash or a server restart
from a state file in DIR, and writes a report with each image's palette EMD and a contact sheet. With
several ``--server`` the jobs are spread over them, and a server that stops answering has its jobs
queued on the others without any job being done twice.
See docs/batch.md.
"""
