#!/usr/bin/env bash
# llama.cpp on SmolLM2's GGUF file after a round trip through an HF folder (issue 20): sets up bench/.venv-llama,
# builds shrink, converts the published Q4_1 file to an HF Llama folder and that folder back to an f32 GGUF file,
# then runs bench/gguf_roundtrip.py (same token ids from llama.cpp's tokenizer, perplexity on both files).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/fetch-assets.sh
bench/setup-llama.sh
cargo build --release -p shrink-cli
base=assets/models/smollm2-135m/SmolLM2-135M-Instruct.Q4_1.gguf
work=bench/work/gguf-roundtrip
mkdir -p "$work"
target/release/shrink convert "$base" --out "$work/hf" --force
target/release/shrink convert "$work/hf" --out "$work/back.gguf" --force
exec bench/.venv-llama/bin/python bench/gguf_roundtrip.py --base "$base" --back "$work/back.gguf" "$@"
