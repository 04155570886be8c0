#!/usr/bin/env bash
# Creates bench/.venv-llama with llama-cpp-python (which builds llama.cpp from its sdist, CPU only) and gguf, the
# decoder peers of bench/llama-compare.py. Separate from bench/.venv so neither install waits on the other.
# Idempotent: does nothing when the stamp exists and the imports still work.
set -euo pipefail

BENCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="$BENCH_DIR/.venv-llama"
PY="$VENV/bin/python"
STAMP="$VENV/.ok"
LLAMA_CPP_PYTHON_VERSION="${LLAMA_CPP_PYTHON_VERSION:-0.3.36}"

check() { "$PY" -c 'import llama_cpp, gguf, numpy; print("llama-cpp-python", llama_cpp.__version__)'; }

if [[ -f "$STAMP" ]] && check >/dev/null 2>&1; then
    echo "llama venv ready: $VENV"
    exit 0
fi
rm -f "$STAMP"
[[ -x "$PY" ]] || python3 -m venv "$VENV"
# Native build for this CPU (llama.cpp's GGML_NATIVE default), as a user installing it here would get; the build
# takes several minutes on 2 cores.
CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" "$PY" -m pip install --disable-pip-version-check -q \
    "llama-cpp-python==$LLAMA_CPP_PYTHON_VERSION" gguf numpy
check
touch "$STAMP"
