#!/usr/bin/env bash
# Create .venv in the repository root and install rho-diffusion into it (editable).
# Idempotent: a second run with an unchanged pyproject.toml returns in about a second.
#
#   RHO_TORCH=cpu   (default) the CPU build of torch 2.13.0
#   RHO_TORCH=cuda  a CUDA build of torch (several GB)
#   RHO_TORCH=xpu   an Intel XPU build; set RHO_TORCH_INDEX to PyTorch's XPU wheel index
#   RHO_TORCH_INDEX extra index URL to take torch from (e.g. PyTorch's CPU index on machines
#                   where `pip install torch==2.13.0` would otherwise pick a CUDA build)
#   PYTHON          interpreter to build the venv with (default python3; needs 3.11+)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
PY=${PYTHON:-python3}
VENV="$ROOT/.venv"
TORCH_KIND=${RHO_TORCH:-cpu}
TORCH_VERSION=${RHO_TORCH_VERSION:-2.13.0}

"$PY" - <<'PYEOF' || { echo "rho setup: Python 3.11 or newer is required (set PYTHON=...)" >&2; exit 1; }
import sys
sys.exit(0 if sys.version_info >= (3, 11) else 1)
PYEOF

if [ ! -x "$VENV/bin/python" ]; then
    echo "rho setup: creating $VENV"
    "$PY" -m venv "$VENV"
fi
VPY="$VENV/bin/python"
STAMP="$VENV/.rho-setup-stamp"
WANT="$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1) $TORCH_KIND $TORCH_VERSION"
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ]; then
    exit 0
fi

export PIP_DISABLE_PIP_VERSION_CHECK=1
INDEX_ARGS=()
if [ -n "${RHO_TORCH_INDEX:-}" ]; then INDEX_ARGS=(--index-url "$RHO_TORCH_INDEX"); fi
if ! "$VPY" -c "import torch" 2>/dev/null; then
    case "$TORCH_KIND" in
        cpu|cuda|xpu)
            echo "rho setup: installing torch==$TORCH_VERSION ($TORCH_KIND)"
            "$VPY" -m pip install -q "${INDEX_ARGS[@]}" "torch==$TORCH_VERSION" ;;
        *) echo "rho setup: RHO_TORCH must be cpu, cuda or xpu (got '$TORCH_KIND')" >&2; exit 1 ;;
    esac
fi
echo "rho setup: installing rho-diffusion and its dependencies into .venv"
"$VPY" -m pip install -q -e ".[dev]"
echo "$WANT" > "$STAMP"
echo "rho setup: done ($("$VPY" -c 'import torch; print("torch", torch.__version__)'))"
