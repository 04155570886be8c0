#!/usr/bin/env bash
# ONNX Runtime on shrink's ONNX exports vs on its own models of all-MiniLM-L6-v2 (issue 17): sets up bench/.venv
# and the ORT models (bench/ort_models.py), exports the fp32 model and its int8-dynamic folder (int8 embeddings,
# as quantize_dynamic quantizes the Gather too; per token and per tensor), then times them interleaved
# (bench/export_compare.py).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bench/setup-venv.sh
cargo build --release -p shrink-cli
bench/.venv/bin/python bench/ort_models.py
work=bench/work/export
mkdir -p "$work"
shrink=target/release/shrink
model=assets/models/all-MiniLM-L6-v2
[[ -f "$work/int8/config.json" ]] || $shrink quantize "$model" --scheme int8-dynamic --embeddings int8 --out "$work/int8"
$shrink export "$model" --out "$work/fp32.onnx" --force
$shrink export "$work/int8" --out "$work/int8.onnx" --force
$shrink export "$work/int8" --int8 dynamic-tensor --out "$work/int8-tensor.onnx" --force
exec bench/.venv/bin/python bench/export_compare.py --shrink-fp32 "$work/fp32.onnx" --shrink-int8 "$work/int8.onnx" \
    --shrink-int8-tensor "$work/int8-tensor.onnx" "$@"
