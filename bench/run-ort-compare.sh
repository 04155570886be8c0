#!/usr/bin/env bash
# shrink vs ONNX Runtime on all-MiniLM-L6-v2: sets up bench/.venv, builds shrink (unless
# --ort-only), builds the ORT models into bench/work/ort (once), runs the interleaved comparison.
# Arguments go to ort_compare.py (e.g. --ort-only, --quick, --threads 1, --cases 1x128).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

bench/setup-venv.sh
ort_only=false
for arg in "$@"; do [[ "$arg" == --ort-only ]] && ort_only=true; done
$ort_only || cargo build --release -p shrink-cli
bench/.venv/bin/python bench/ort_models.py
exec bench/.venv/bin/python bench/ort_compare.py "$@"
