#!/usr/bin/env bash
# shrink vs ONNX Runtime by instruction counts under callgrind (both on their AVX2 paths): sets up
# bench/.venv and the ORT models (once), builds shrink and its int8 folder, runs bench/callgrind.py
# (~15 minutes with the cache model). Arguments go to callgrind.py (e.g. --no-cache-sim, --precisions int8).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

bench/setup-venv.sh
cargo build --release -p shrink-cli
bench/.venv/bin/python bench/ort_models.py
shrink=target/release/shrink
int8=bench/work/shrink-int8
if [[ ! -f "$int8/config.json" || "$int8/config.json" -ot "$shrink" ]]; then
  "$shrink" quantize assets/models/all-MiniLM-L6-v2 --scheme int8-dynamic --out "$int8" --force
fi
exec bench/.venv/bin/python bench/callgrind.py "$@"
