#!/usr/bin/env bash
# Regenerates the generated seeds in fuzz/corpus/TARGET/ (the hand-written ones, and what campaigns added, stay)
# from real writer code paths: the tiny tokenizer
# cut from MiniLM's (make-tokenizer.jq), tiny fp32 folders written by examples/tiny_model.rs through
# shrink_format::tensors::serialize, each quantized by `shrink quantize` in every storage format the runtime reads.
#   fuzz/make-seeds.sh [SHRINK_BINARY]     (default: target/release/shrink; build it with cargo build --release)
set -euo pipefail
cd "$(dirname "$0")"
shrink=$(realpath "${1:-../target/release/shrink}")
[ -x "$shrink" ] || { echo "no shrink binary at $shrink (cargo build --release -p shrink)" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

jq -c -f make-tokenizer.jq ../assets/models/all-MiniLM-L6-v2/tokenizer.json > tiny/tokenizer.json
cargo run --quiet --release --example tiny_model -- "$work/dense" 1
cargo run --quiet --release --example tiny_model -- "$work/head" 1 --labels
cargo run --quiet --release --example tiny_model -- "$work/half" 0.5
cargo run --quiet --release --example tiny_model -- "$work/sparse" 0.01
# Calibration texts in the tiny vocabulary.
for i in $(seq 1 24); do
  printf '{"text": "the %s of the world was new, and she said that it is one time more %s"}\n' "$i" "$((i * 7))"
done > "$work/calib.jsonl"

mkdir -p corpus/{quantized,safetensors,config,tokenizer}
quant() { # NAME SOURCE ARGS...: quantize SOURCE into corpus/quantized/NAME (config.json, NUL, model.safetensors)
  local name=$1 src=$2; shift 2
  SHRINK_NO_PROGRESS=1 "$shrink" --threads 1 quantize "$work/$src" --out "$work/q-$name" "$@" > /dev/null
  { cat "$work/q-$name/config.json"; printf '\0'; cat "$work/q-$name/model.safetensors"; } > "corpus/quantized/$name"
}
calib=(--calib "$work/calib.jsonl" --calib-samples 24 --max-len 16)
quant int8 dense --scheme int8-dynamic
quant int8-emb-int8-smooth dense --scheme int8-dynamic --embeddings int8 --smooth-alpha 0.5 "${calib[@]}"
quant int8-static-head head --scheme int8-static "${calib[@]}"
quant int8-static-sym-tensor dense --scheme int8-static --symmetric --weights per-tensor --attention fp32 "${calib[@]}"
quant int4-g32-emb-int4 dense --scheme int4 --group 32 --embeddings int4
quant int4-g32-f32act-head head --scheme int4 --group 32 --activations f32
quant int4-g32-static dense --scheme int4 --group 32 --activations static --smooth-alpha 0.5 "${calib[@]}"
quant fp16-head head --scheme fp16
quant sparse-mask half --scheme sparse
quant sparse-index sparse --scheme sparse
for src in dense head; do
  { cat "$work/$src/config.json"; printf '\0'; cat "$work/$src/model.safetensors"; } > "corpus/quantized/fp32-$src"
done

# The other targets start from the same files, taken apart.
for f in "$work"/q-int8 "$work"/q-int4-g32-emb-int4 "$work"/q-sparse-index "$work"/q-fp16-head "$work"/head; do
  cp "$f/model.safetensors" "corpus/safetensors/$(basename "$f")"
  cp "$f/config.json" "corpus/config/$(basename "$f")"
done
cp ../assets/models/all-MiniLM-L6-v2/config.json corpus/config/minilm
cp tiny/tokenizer.json corpus/tokenizer/wordpiece
du -sh corpus/*
