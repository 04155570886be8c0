#!/usr/bin/env bash
# The main job end to end on the real example: fetch all-MiniLM-L6-v2 and BBC News, fine-tune the topic classifier,
# quantize it and the base model (int8 dynamic; int8 static calibrated on train; int4 g32 by GPTQ with int4
# embeddings), prune half the classifier's heads and FFN neurons with a short recovery, trim its vocabulary to the
# tokens the training texts use (and int8 that), evaluate
# every variant on the test split (classify, retrieval), time it on the runtime (batch 1 x MAX_LEN, 1 thread), and
# print one table.
# THREADS (default: all cores), EPOCHS (3) and MAX_LEN (128) can be set in the environment.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/fetch-assets.sh
cargo build --release --quiet -p shrink-cli
shrink=target/release/shrink
base=assets/models/all-MiniLM-L6-v2
data=assets/data/bbc
max_len="${MAX_LEN:-128}"
out="out/bbc-classifier-$max_len"
threads=()
[[ -n "${THREADS:-}" ]] && threads=(--threads "$THREADS")

"$shrink" inspect "$base" --seq "$max_len"
start=$(date +%s)
"$shrink" finetune "$base" --data "$data/train.jsonl" --out "$out" --force --max-len "$max_len" --epochs "${EPOCHS:-3}" "${threads[@]}"
train_s=$(( $(date +%s) - start ))
calib=(--calib "$data/train.jsonl" --calib-samples 256)
for m in "$out" "$base"; do
  name="$m"; [[ "$m" == "$base" ]] && name=out/minilm
  "$shrink" quantize "$m" --scheme int8-dynamic --out "$name-int8" --force
  "$shrink" quantize "$m" --scheme int8-static --observer minmax "${calib[@]}" --out "$name-int8-static" --force "${threads[@]}"
  "$shrink" quantize "$m" --scheme int4 --group 32 --gptq --act-order --embeddings int4 "${calib[@]}" --out "$name-int4" --force "${threads[@]}"
done

# Structured pruning of the classifier: half its heads and FFN neurons cut out, one epoch of recovery; then only the
# tokens the training texts use twice or more (the token table is most of what is left), then int8.
"$shrink" prune "$out" --heads 0.5 --ffn 0.5 --data "$data/train.jsonl" --recover finetune --epochs 1 --out "$out-pruned" --force "${threads[@]}"
"$shrink" trim-vocab "$out-pruned" --data "$data/train.jsonl" --min-count 2 --out "$out-pruned-vocab" --force
"$shrink" quantize "$out-pruned-vocab" --scheme int8-dynamic --embeddings int8 --out "$out-pruned-vocab-int8" --force

eval_json() { "$shrink" eval "$1" --task "$2" --data "$data/test.jsonl" --json "${threads[@]}"; }
bench_json() { "$shrink" --threads 1 bench "$1" --batch 1 --seq "$max_len" --runs 30 --json; }
rows=()
for m in "$out" "$out-int8" "$out-int8-static" "$out-int4" "$out-pruned" "$out-pruned-vocab" "$out-pruned-vocab-int8"; do rows+=("$m" classify "$(eval_json "$m" classify)" "$(bench_json "$m")"); done
for m in "$base" out/minilm-int8 out/minilm-int8-static out/minilm-int4; do rows+=("$m" retrieval "$(eval_json "$m" retrieval)" "$(bench_json "$m")"); done

python3 - "$train_s" "$max_len" "${rows[@]}" <<'PY'
import json, sys
train_s, max_len, rest = sys.argv[1], sys.argv[2], sys.argv[3:]
print()
print(f"| model | task (BBC test, n=448) | metrics | file | latency 1 x {max_len}, 1 thread | peak RSS |")
print("|---|---|---|---|---|---|")
for i in range(0, len(rest), 4):
    model, task, r, b = rest[i], rest[i + 1], json.loads(rest[i + 2]), json.loads(rest[i + 3])
    if task == "classify":
        metrics = f"accuracy {r['accuracy']:.4f}, macro F1 {r['macro_f1']:.4f}"
    else:
        metrics = f"recall@1 {r['recall@1']:.4f}, recall@10 {r['recall@10']:.4f}, MRR@10 {r['mrr@10']:.4f}"
    print(f"| {model} | {task} | {metrics} | {b['file_mb']:.1f} MB | {b['median_ms']:.1f} ms | {b['peak_rss_mb']:.0f} MB |")
print(f"\nfine-tuning took {train_s} s")
PY
