#!/usr/bin/env bash
# The main job end to end on the real example: fetch all-MiniLM-L6-v2 and BBC News, fine-tune the topic classifier,
# evaluate it and the base model's retrieval on the test split, and print one table.
# THREADS (default: all cores), EPOCHS (3) and MAX_LEN (128) can be set in the environment.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/fetch-assets.sh
cargo build --release --quiet -p shrink
shrink=target/release/shrink
base=assets/models/all-MiniLM-L6-v2
data=assets/data/bbc
max_len="${MAX_LEN:-128}"
out="out/bbc-classifier-$max_len"
threads=()
[[ -n "${THREADS:-}" ]] && threads=(--threads "$THREADS")

"$shrink" inspect "$base" --seq "$max_len"
start=$(date +%s)
"$shrink" finetune "$base" --data "$data/train.jsonl" --out "$out" --max-len "$max_len" --epochs "${EPOCHS:-3}" "${threads[@]}"
train_s=$(( $(date +%s) - start ))
cls=$("$shrink" eval "$out" --task classify --data "$data/test.jsonl" --json "${threads[@]}")
ret=$("$shrink" eval "$base" --task retrieval --data "$data/test.jsonl" --json "${threads[@]}")

python3 - "$cls" "$ret" "$train_s" "$out" "$max_len" <<'PY'
import json, os, sys
cls, ret, train_s, out, max_len = json.loads(sys.argv[1]), json.loads(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
mb = os.path.getsize(os.path.join(out, "model.safetensors")) / 1e6
print()
print("| model | task (BBC test) | n | metrics | size |")
print("|---|---|---|---|---|")
print(f"| {out} (fine-tuned, {max_len} tokens, {train_s} s) | classify | {cls['n']} | "
      f"accuracy {cls['accuracy']:.4f}, macro F1 {cls['macro_f1']:.4f} | {mb:.1f} MB |")
print(f"| all-MiniLM-L6-v2 | retrieval (title -> body) | {ret['n']} | "
      f"recall@1 {ret['recall@1']:.4f}, recall@10 {ret['recall@10']:.4f}, MRR@10 {ret['mrr@10']:.4f} | 90.9 MB |")
PY
