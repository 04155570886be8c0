#!/usr/bin/env bash
# Post-training quantization, shrink vs ONNX Runtime (quantize_dynamic, quantize_static QDQ MinMax/Entropy/Percentile)
# on the fine-tuned BBC classifiers (128 and 32 tokens) and the base MiniLM: accuracy / retrieval, size, latency.
# Sets up bench/.venv, makes the classifiers with the existing shrink binary if they are missing (as scripts/demo.sh
# does), builds the ORT models into bench/work/ptq (once; --force rebuilds them and the shrink variants) and writes
# bench/results/ptq_compare.{json,md}. Never builds shrink: it uses target/release/shrink as it is.
# Arguments go to bench/ptq_compare.py (--quick, --force, --models classifier-32,base, --rounds N; see --help).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

shrink=target/release/shrink
[[ -x "$shrink" ]] || { echo "no $shrink: build it first (cargo build --release -p shrink-cli)" >&2; exit 1; }
base=assets/models/all-MiniLM-L6-v2
data=assets/data/bbc
[[ -f "$base/model.safetensors" && -f "$data/train.jsonl" && -f "$data/test.jsonl" ]] || scripts/fetch-assets.sh
bench/setup-venv.sh
for max_len in 128 32; do
    out="out/bbc-classifier-$max_len"
    if [[ ! -f "$out/model.safetensors" ]]; then
        echo "fine-tuning $out (3 epochs, as scripts/demo.sh does)"
        "$shrink" finetune "$base" --data "$data/train.jsonl" --out "$out" --max-len "$max_len" --epochs 3
    fi
done
start=$(date +%s)
bench/.venv/bin/python bench/ptq_compare.py "$@"
echo "run-ptq-compare: $(( $(date +%s) - start )) s"
