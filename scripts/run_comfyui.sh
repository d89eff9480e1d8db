#!/usr/bin/env bash
# Set up ComfyUI with this pack installed and start it.
#   bash scripts/run_comfyui.sh [extra ComfyUI args, e.g. --cpu --port 8188]
# With COMFYUI_PATH (and optionally COMFYUI_PYTHON) set, uses that ComfyUI and its Python; otherwise
# installs ComfyUI with comfy-cli into ./.comfyui (needs internet access).
set -euo pipefail
PACK="$(cd "$(dirname "$0")/.." && pwd)"
if [ -z "${COMFYUI_PATH:-}" ]; then
  COMFYUI_PATH="$PACK/.comfyui/ComfyUI"
  if [ ! -f "$COMFYUI_PATH/main.py" ]; then
    python3 -m pip install -q comfy-cli
    comfy --skip-prompt --workspace "$COMFYUI_PATH" install
  fi
fi
PY="${COMFYUI_PYTHON:-}"
if [ -z "$PY" ]; then
  for cand in "$COMFYUI_PATH/.venv/bin/python" "$COMFYUI_PATH/venv/bin/python" python3; do
    if command -v "$cand" >/dev/null 2>&1; then PY="$cand"; break; fi
  done
fi
LINK="$COMFYUI_PATH/custom_nodes/palette-control"
[ -e "$LINK" ] || ln -s "$PACK" "$LINK"
"$PY" -m pip install -q -r "$PACK/requirements.txt"
cd "$COMFYUI_PATH"
exec "$PY" main.py "$@"
