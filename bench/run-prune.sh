#!/usr/bin/env bash
# Structured pruning of the fine-tuned BBC classifier (out/bbc-classifier-128): 50% heads + 50% FFN without
# recovery, with fine-tune recovery and with distillation recovery; the fine-tuned one quantized to int8-dynamic,
# and with its vocabulary trimmed to the train split's (trim-vocab --min-count 2). Accuracy on the 448-row test
# split; latency on the runtime (1 x 128, 1 thread, models alternating, medians) with ONNX Runtime fp32 on the
# unpruned model as the peer in the same rounds (when bench/.venv and the ORT models exist: bench/run-ort-compare.sh
# makes them); then accuracy against the fraction of heads removed (no recovery). Writes
# bench/results/prune.{md,json} and prune_heads_curve.svg. Models already in OUT are reused (delete one to rebuild
# it). EPOCHS (default 2) sets the recovery epochs; OUT (default out/prune-runs) the model folder.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet -p shrink-cli
shrink=target/release/shrink
teacher=out/bbc-classifier-128
data=assets/data/bbc
out="${OUT:-out/prune-runs}"
mkdir -p "$out" bench/results
common=(--data "$data/train.jsonl" --samples 128 --batch 8)
# build_once DIR CMD...: runs CMD only when DIR is missing.
build_once() { local dir=$1; shift; [[ -d "$dir" ]] || "$@"; }

build_once "$out/importance" "$shrink" --threads 1 importance "$teacher" "${common[@]}" --out "$out/importance"
build_once "$out/h50-f50" "$shrink" --threads 1 prune "$teacher" --heads 0.5 --ffn 0.5 "${common[@]}" --out "$out/h50-f50"
build_once "$out/h50-f50-iter" "$shrink" --threads 1 prune "$teacher" --heads 0.5 --ffn 0.5 "${common[@]}" --schedule iterative --steps 5 --out "$out/h50-f50-iter"
build_once "$out/h50-f50-ft" "$shrink" --threads 1 prune "$teacher" --heads 0.5 --ffn 0.5 "${common[@]}" --recover finetune --epochs "${EPOCHS:-2}" --out "$out/h50-f50-ft"
build_once "$out/h50-f50-kd" "$shrink" --threads 1 prune "$teacher" --heads 0.5 --ffn 0.5 "${common[@]}" --recover distill --epochs "${EPOCHS:-2}" --out "$out/h50-f50-kd"
build_once "$out/h50-f50-ft-int8" "$shrink" quantize "$out/h50-f50-ft" --scheme int8-dynamic --out "$out/h50-f50-ft-int8"
build_once "$out/teacher-int8" "$shrink" quantize "$teacher" --scheme int8-dynamic --out "$out/teacher-int8"
build_once "$out/h50-f50-ft-vocab2" "$shrink" trim-vocab "$out/h50-f50-ft" --data "$data/train.jsonl" --min-count 2 --out "$out/h50-f50-ft-vocab2"
build_once "$out/h50-f50-ft-vocab2-int8" "$shrink" quantize "$out/h50-f50-ft-vocab2" --scheme int8-dynamic --embeddings int8 --out "$out/h50-f50-ft-vocab2-int8"
for h in 0.25 0.75; do
  build_once "$out/h${h#0.}" "$shrink" --threads 1 prune "$teacher" --heads "$h" "${common[@]}" --out "$out/h${h#0.}"
done
build_once "$out/h5" "$shrink" --threads 1 prune "$teacher" --heads 0.5 "${common[@]}" --out "$out/h5"

models=("$teacher" "$out/h50-f50" "$out/h50-f50-iter" "$out/h50-f50-ft" "$out/h50-f50-kd" "$out/teacher-int8" "$out/h50-f50-ft-int8"
        "$out/h50-f50-ft-vocab2" "$out/h50-f50-ft-vocab2-int8" "$out/h25" "$out/h5" "$out/h75")
evals=()
for m in "${models[@]}"; do evals+=("$("$shrink" --threads 1 eval "$m" --task classify --data "$data/test.jsonl" --json)"); done
# Latency: rounds of 30 runs per model, models alternating, so load on the shared machine hits all alike.
ort_fp32=bench/work/ort/fp32.onnx
ort=false
[[ -x bench/.venv/bin/python && -f "$ort_fp32" ]] && ort=true
$ort || echo "no bench/.venv or $ort_fp32: latency without the ONNX Runtime peer (bench/run-ort-compare.sh makes both)" >&2
benches=()
for round in 1 2 3 4 5; do
  for m in "$teacher" "$out/h50-f50-ft" "$out/teacher-int8" "$out/h50-f50-ft-int8"; do
    benches+=("$m" "$("$shrink" --threads 1 bench "$m" --seq 128 --runs 30 --json)")
  done
  if $ort; then
    benches+=("ort-fp32" "$(bench/.venv/bin/python bench/ort_time.py --model "$ort_fp32" --batch 1 --seq 128 --threads 1 --runs 30 --warmup 3)")
  fi
done
python3 bench/prune_report.py "${#models[@]}" "${models[@]}" "${evals[@]}" -- "${benches[@]}"
