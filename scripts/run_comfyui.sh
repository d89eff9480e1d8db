#!/usr/bin/env bash
# Start ComfyUI with this pack; the first run installs comfy-cli and ComfyUI next to the pack.
# Written for bash 3.2 too (macOS), hence no associative arrays and the "${a[@]+...}" idiom for arrays.
set -euo pipefail

PACK="$(cd "$(dirname "$0")/.." && pwd)"
HOME_DIR="${PALETTE_COMFYUI_HOME:-$PACK/.comfyui}"
CLI_VENV="$HOME_DIR/cli-venv"
MARKER=".palette-control-gpu" # in the ComfyUI folder: the GPU kind its PyTorch was installed for
KFD="${PALETTE_KFD_PATH:-/dev/kfd}" # ROCm's kernel driver; a setting so tests can decide it
EXISTING_HINT="to use an existing ComfyUI instead: COMFYUI_PATH=/path/to/ComfyUI bash scripts/run_comfyui.sh"

usage() {
  cat <<EOF
Usage: bash scripts/run_comfyui.sh [--gpu KIND] [--workspace DIR] [ComfyUI options...]

Starts ComfyUI with this pack (palette-control). The first run installs comfy-cli into its own virtual
environment ($HOME_DIR/cli-venv, or uses a 'comfy' already on PATH) and ComfyUI with PyTorch for
your GPU (needs PyPI, GitHub and download.pytorch.org); later runs reuse both and work offline.

  --gpu KIND       nvidia, amd, intel (discrete Arc), apple (Apple silicon) or cpu; default: detected
                   (nvidia-smi, rocminfo/rocm-smi, lspci, uname) or, for a ComfyUI installed here before,
                   what it was installed for. Also PALETTE_GPU. With cpu, ComfyUI also gets --cpu.
  --workspace DIR  the ComfyUI folder (default $HOME_DIR/ComfyUI)
  -h, --help       this text
Every other option goes to ComfyUI's main.py (e.g. --port 8189, --listen); after -- everything does.

Environment:
  COMFYUI_PATH=DIR       use the ComfyUI in DIR (installs nothing but the pack's requirements);
  COMFYUI_PYTHON=PY      its Python (default DIR/.venv/bin/python, DIR/venv/bin/python, python3)
  PALETTE_COMFYUI_HOME   where comfy-cli's environment and the default ComfyUI go
  PALETTE_PROBE_PYPI, PALETTE_PROBE_GITHUB, PALETTE_PROBE_PYTORCH
                         URLs checked before downloading (set one empty to skip that check)
EOF
}

say() { printf 'palette-control: %s\n' "$*"; }
die() {
  printf 'palette-control: %s\n' "$*" >&2
  exit 1
}
have() { command -v "$1" >/dev/null 2>&1; }

GPU="${PALETTE_GPU:-}"
WS=""
ARGS=()
while [ $# -gt 0 ]; do
  case "$1" in
    -h | --help) usage; exit 0 ;;
    --gpu) [ $# -ge 2 ] || die "--gpu needs a value"; GPU="$2"; shift 2 ;;
    --gpu=*) GPU="${1#*=}"; shift ;;
    --workspace) [ $# -ge 2 ] || die "--workspace needs a value"; WS="$2"; shift 2 ;;
    --workspace=*) WS="${1#*=}"; shift ;;
    --) shift; ARGS+=("$@"); break ;;
    *) ARGS+=("$1"); shift ;;
  esac
done
case "$GPU" in
  "" | nvidia | amd | intel | apple | cpu) ;;
  *) die "unknown --gpu '$GPU' (nvidia, amd, intel, apple or cpu)" ;;
esac

# Only cards whose PyTorch build pays off count: an integrated Intel or AMD GPU means cpu.
detect_gpu() {
  local cards amd arc
  amd='Navi|Instinct|Vega 20|Arcturus|Aldebaran'          # ROCm's cards; APUs are Raphael, Phoenix, ...
  arc='DG2|Battlemage|Alchemist|Arc (Pro )?[AB][0-9]{3}' # discrete Arc; the integrated ones are *Lake
  if [ "$(uname -s 2>/dev/null || true)" = Darwin ]; then
    if [ "$(uname -m 2>/dev/null || true)" = arm64 ]; then echo apple; else echo cpu; fi
    return
  fi
  if have nvidia-smi && nvidia-smi -L 2>/dev/null | grep -q '^GPU [0-9]'; then echo nvidia; return; fi
  if have rocminfo && rocminfo 2>/dev/null | grep -Eq 'Name:[[:space:]]+gfx[0-9]'; then echo amd; return; fi
  if have rocm-smi && rocm-smi --showproductname 2>/dev/null | grep -q '^GPU\['; then echo amd; return; fi
  cards=""
  if have lspci; then cards="$(lspci 2>/dev/null | grep -Ei 'vga|3d controller|display controller' || true)"; fi
  if printf '%s\n' "$cards" | grep -Ei 'AMD/ATI|Advanced Micro Devices' | grep -Eq "$amd"; then
    # ROCm needs its kernel driver (/dev/kfd) even when rocminfo is not installed.
    if [ -e "$KFD" ]; then echo amd; return; fi
    say "an AMD card is present but $KFD is not (no ROCm driver): using cpu; --gpu amd overrides" >&2
  fi
  if printf '%s\n' "$cards" | grep -i 'intel' | grep -Ei "$arc" | grep -viq 'lake'; then echo intel; return; fi
  if printf '%s\n' "$cards" | grep -qi 'nvidia'; then
    say "an NVIDIA card is present but nvidia-smi does not list it: using cpu; --gpu nvidia overrides" >&2
  fi
  echo cpu
}

# Prints "Name (url), ..." for each unreachable NAME URL pair; empty URLs are not checked.
unreachable() {
  have python3 || return 0
  python3 - "$@" <<'EOF'
import ssl
import sys
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

pairs = [(n, u) for n, u in zip(sys.argv[1::2], sys.argv[2::2]) if u]


def reachable(url):
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=5):
            return True
    except urllib.error.HTTPError:
        return True  # the server answered
    except urllib.error.URLError as e:
        return isinstance(e.reason, ssl.SSLError)  # a Python without CA certificates (macOS) still got there
    except Exception:
        return False


with ThreadPoolExecutor(max(1, len(pairs))) as pool:
    ok = list(pool.map(reachable, [u for _, u in pairs]))
print(", ".join(f"{n} ({u})" for (n, u), good in zip(pairs, ok) if not good))
EOF
}

PYPI_URL="${PALETTE_PROBE_PYPI-https://pypi.org/simple/}"
GITHUB_URL="${PALETTE_PROBE_GITHUB-https://github.com/comfyanonymous/ComfyUI}"
PYTORCH_URL="${PALETTE_PROBE_PYTORCH-https://download.pytorch.org/whl/}"

# Stops with one line, before anything is changed, when a download site cannot be reached.
REACHED=" "
need_network() { # WHY HINT NAME URL [NAME URL...]
  local why="$1" hint="$2" down
  local -a todo=()
  shift 2
  while [ $# -gt 0 ]; do
    case "$REACHED" in *" $2 "*) ;; *) todo+=("$1" "$2") ;; esac
    shift 2
  done
  [ ${#todo[@]} -gt 0 ] || return 0
  down="$(unreachable "${todo[@]}")"
  [ -z "$down" ] || die "cannot reach $down, needed to $why; $hint"
  REACHED="$REACHED${todo[*]} "
}

# comfy-cli talks JSON to pipes (and so to $(...)) unless told otherwise; a user's own choice stays.
export COMFY_OUTPUT="${COMFY_OUTPUT:-pretty}"

# A comfy on PATH is used if it is comfy-cli >= 1.10 (older ones install ComfyUI into their own Python).
recent_comfy() {
  local out v major minor
  out="$("$1" --version 2>/dev/null)" || return 1
  v="$(printf '%s\n' "$out" | grep -Eo '"version": *"[0-9]+\.[0-9]+' | head -n 1 | grep -Eo '[0-9.]+$' || true)"
  [ -n "$v" ] || v="$(printf '%s\n' "$out" | grep -Eo '^[0-9]+\.[0-9]+' | tail -n 1 || true)"
  major="${v%%.*}"
  minor="${v#*.}"
  minor="${minor%%[!0-9]*}"
  case "$major$minor" in "" | *[!0-9]*) return 1 ;; esac
  [ "$major" -gt 1 ] || { [ "$major" -eq 1 ] && [ "$minor" -ge 10 ]; }
}

# The Python comfy-cli runs in: ours, or the one named in the shebang of a comfy on PATH (pipx, uv tool).
cli_python() {
  local line py
  if [ -x "$CLI_VENV/bin/python" ]; then echo "$CLI_VENV/bin/python"; return; fi
  have comfy || return 0
  line="$(head -n 1 "$(command -v comfy)")"
  case "$line" in "#!/"*) ;; *) return 0 ;; esac
  py="${line#\#!}"
  py="${py%% *}"
  case "${py##*/}" in python*) [ -x "$py" ] && echo "$py" ;; esac
  return 0
}

if [ -n "${COMFYUI_PATH:-}" ]; then
  [ -z "$WS" ] || die "give either COMFYUI_PATH or --workspace, not both"
  WS="$COMFYUI_PATH"
  [ -f "$WS/main.py" ] || die "COMFYUI_PATH=$WS has no main.py"
fi
WS="${WS:-$HOME_DIR/ComfyUI}"
case "$WS" in /*) ;; *) WS="$PWD/$WS" ;; esac

GPU_FROM="--gpu"
if [ -z "$GPU" ] && [ -f "$WS/$MARKER" ]; then
  GPU="$(cat "$WS/$MARKER")"
  GPU_FROM="installed for"
elif [ -z "$GPU" ]; then
  GPU="$(detect_gpu)"
  GPU_FROM="detected"
elif [ -f "$WS/$MARKER" ] && [ "$(cat "$WS/$MARKER")" != "$GPU" ]; then
  say "$WS was installed for $(cat "$WS/$MARKER"); --gpu $GPU does not reinstall it (remove the folder for that)"
fi

if [ ! -f "$WS/main.py" ]; then
  # comfy-cli comes from PyPI, ComfyUI from GitHub, its PyTorch from download.pytorch.org (PyPI on macOS).
  probes=(PyPI "$PYPI_URL" GitHub "$GITHUB_URL")
  [ "$GPU" = apple ] || probes+=(download.pytorch.org "$PYTORCH_URL")
  need_network "install ComfyUI" "$EXISTING_HINT" "${probes[@]}"
  COMFY=""
  if [ -x "$CLI_VENV/bin/comfy" ]; then
    COMFY="$CLI_VENV/bin/comfy"
  elif have comfy && recent_comfy comfy; then
    COMFY="$(command -v comfy)"
  fi
  if [ -z "$COMFY" ]; then
    have python3 || die "python3 is needed to install comfy-cli"
    mkdir -p "$HOME_DIR"
    say "installing comfy-cli into $CLI_VENV"
    if ! python3 -m venv "$CLI_VENV" >/dev/null 2>&1; then
      rm -rf "$CLI_VENV"
      die "python3 -m venv failed; install the python3-venv package (e.g. sudo apt install python3-venv) and run again"
    fi
    if ! "$CLI_VENV/bin/python" -m pip install -q 'comfy-cli>=1.10,<2'; then
      rm -rf "$CLI_VENV"
      die "could not install comfy-cli into $CLI_VENV"
    fi
    COMFY="$CLI_VENV/bin/comfy"
  fi
  case "$GPU" in
    apple) flag=--m-series ;;
    intel) flag=--intel-arc ;;
    *) flag="--$GPU" ;;
  esac
  say "installing ComfyUI into $WS for $GPU ($GPU_FROM)"
  mkdir -p "$(dirname "$WS")"
  # Unset so comfy-cli gives ComfyUI its own .venv instead of filling the caller's active environment.
  if ! (unset VIRTUAL_ENV CONDA_PREFIX && "$COMFY" --skip-prompt --workspace "$WS" install "$flag"); then
    [ -e "$WS" ] || die "comfy install failed"
    die "comfy install failed; remove $WS before running this again"
  fi
  printf '%s\n' "$GPU" >"$WS/$MARKER"
elif [ "$WS" = "$HOME_DIR/ComfyUI" ] && [ ! -f "$WS/$MARKER" ]; then
  say "$WS has no record of a finished install; if ComfyUI fails to start, remove that folder and run again"
fi

PY="${COMFYUI_PYTHON:-}"
if [ -z "$PY" ]; then
  for cand in "$WS/.venv/bin/python" "$WS/venv/bin/python"; do
    if [ -x "$cand" ]; then PY="$cand"; break; fi
  done
fi
if [ -z "$PY" ] && [ -n "${COMFYUI_PATH:-}" ] && have python3; then PY="$(command -v python3)"; fi
[ -n "$PY" ] || PY="$(cli_python)"
[ -n "$PY" ] || die "cannot find ComfyUI's Python in $WS/.venv or $WS/venv; set COMFYUI_PYTHON"

# Where ComfyUI will look for things, as main.py will parse these options (relative paths from $WS).
host=127.0.0.1 port=8188 scheme=http base="" out="" has_cpu=0
set -- ${ARGS[@]+"${ARGS[@]}"}
while [ $# -gt 0 ]; do
  case "$1" in
    --listen) if [ $# -ge 2 ] && [ "${2#-}" = "$2" ]; then host="$2"; shift; else host="0.0.0.0"; fi ;;
    --listen=*) host="${1#*=}" ;;
    --port) [ $# -lt 2 ] || { port="$2"; shift; } ;;
    --port=*) port="${1#*=}" ;;
    --tls-keyfile | --tls-keyfile=*) scheme=https ;;
    --base-directory) [ $# -lt 2 ] || { base="$2"; shift; } ;;
    --base-directory=*) base="${1#*=}" ;;
    --output-directory) [ $# -lt 2 ] || { out="$2"; shift; } ;;
    --output-directory=*) out="${1#*=}" ;;
    --cpu) has_cpu=1 ;;
  esac
  shift
done
in_ws() { case "$1" in /*) echo "$1" ;; *) echo "$WS/$1" ;; esac }
base="$(in_ws "${base:-.}")"
base="${base%/.}"
out="$(in_ws "${out:-$base/output}")"
host="${host%%,*}"
case "$host" in "" | 0.0.0.0 | "::") host=127.0.0.1 ;; *:*) host="[$host]" ;; esac
[ "$GPU" != cpu ] || [ "$has_cpu" = 1 ] || ARGS+=(--cpu)

# ComfyUI reads custom nodes from <base>/custom_nodes, so --base-directory moves the link too.
LINK="$base/custom_nodes/palette-control"
if [ -L "$LINK" ] && [ ! -e "$LINK" ]; then
  say "replacing the dangling link $LINK"
  rm "$LINK"
fi
if [ ! -e "$LINK" ]; then
  mkdir -p "$base/custom_nodes"
  ln -s "$PACK" "$LINK"
elif [ "$(cd "$LINK" 2>/dev/null && pwd -P)" != "$(cd "$PACK" && pwd -P)" ]; then
  say "$LINK already exists and is not this checkout; ComfyUI loads that, not $PACK (remove it to use this one)"
fi

REQ_CHECK='
import sys
from importlib import metadata
try:
    from packaging.requirements import Requirement
except ImportError:
    from pip._vendor.packaging.requirements import Requirement
for line in open(sys.argv[1]):
    line = line.split("#", 1)[0].strip()
    if line:
        req = Requirement(line)
        if req.marker is None or req.marker.evaluate():
            if not req.specifier.contains(metadata.version(req.name), prereleases=True):
                sys.exit(1)
'
if ! "$PY" - "$PACK/requirements.txt" <<<"$REQ_CHECK" >/dev/null 2>&1; then
  need_network "install the pack's requirements into $PY" \
    "install them yourself: $PY -m pip install -r $PACK/requirements.txt" PyPI "$PYPI_URL"
  "$PY" -m pip install -q -r "$PACK/requirements.txt"
fi

say "ComfyUI: $WS, Python: $PY, GPU: $GPU ($GPU_FROM)"
say "open $scheme://$host:$port in a browser once ComfyUI is up"
say "first workflow: Templates > Custom Nodes > palette-control > recolor_image (needs no model)"
say "then training_free_alignment, once an SDXL checkpoint is in $base/models/checkpoints"
say "images are saved in $out"
cd "$WS"
exec "$PY" main.py ${ARGS[@]+"${ARGS[@]}"}
