#!/usr/bin/env bash
# Structured pruning of the fine-tuned BBC classifier (out/bbc-classifier-128): 50% heads + 50% FFN without
# recovery, with fine-tune recovery and with distillation recovery; the fine-tuned one quantized to int8-dynamic.
# Accuracy on the 448-row test split, latency on the runtime (1 x 128, 1 thread, models alternating, medians), then
# accuracy against the fraction of heads removed (no recovery). Writes bench/results/prune.{md,json} and
# prune_heads_curve.svg. EPOCHS (default 2) sets the recovery epochs; OUT (default out/prune-runs) the model folder.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet -p shrink
shrink=target/release/shrink
teacher=out/bbc-classifier-128
data=assets/data/bbc
out="${OUT:-out/prune-runs}"
mkdir -p "$out" bench/results
common=(--data "$data/train.jsonl" --samples 128 --batch 8)

"$shrink" --threads 1 importance "$teacher" "${common[@]}" --out "$out/importance"
"$shrink" --threads 1 prune "$teacher" --heads 0.5 --ffn 0.5 "${common[@]}" --out "$out/h50-f50"
"$shrink" --threads 1 prune "$teacher" --heads 0.5 --ffn 0.5 "${common[@]}" --schedule iterative --steps 5 --out "$out/h50-f50-iter"
"$shrink" --threads 1 prune "$teacher" --heads 0.5 --ffn 0.5 "${common[@]}" --recover finetune --epochs "${EPOCHS:-2}" --out "$out/h50-f50-ft"
"$shrink" --threads 1 prune "$teacher" --heads 0.5 --ffn 0.5 "${common[@]}" --recover distill --epochs "${EPOCHS:-2}" --out "$out/h50-f50-kd"
"$shrink" quantize "$out/h50-f50-ft" --scheme int8-dynamic --out "$out/h50-f50-ft-int8"
"$shrink" quantize "$teacher" --scheme int8-dynamic --out "$out/teacher-int8"
for h in 0.25 0.75; do
  "$shrink" --threads 1 prune "$teacher" --heads "$h" "${common[@]}" --out "$out/h${h#0.}"
done
"$shrink" --threads 1 prune "$teacher" --heads 0.5 "${common[@]}" --out "$out/h5"

models=("$teacher" "$out/h50-f50" "$out/h50-f50-iter" "$out/h50-f50-ft" "$out/h50-f50-kd" "$out/teacher-int8" "$out/h50-f50-ft-int8" "$out/h25" "$out/h5" "$out/h75")
evals=()
for m in "${models[@]}"; do evals+=("$("$shrink" --threads 1 eval "$m" --task classify --data "$data/test.jsonl" --json)"); done
# Latency: rounds of 30 runs per model, models alternating, so load on the shared machine hits all alike.
benches=()
for round in 1 2 3 4 5; do
  for m in "$teacher" "$out/h50-f50-ft" "$out/teacher-int8" "$out/h50-f50-ft-int8"; do
    benches+=("$m" "$("$shrink" --threads 1 bench "$m" --seq 128 --runs 30 --json)")
  done
done
python3 bench/prune_report.py "${#models[@]}" "${models[@]}" "${evals[@]}" -- "${benches[@]}"
