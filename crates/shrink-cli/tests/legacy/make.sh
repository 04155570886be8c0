#!/usr/bin/env bash
# Rebuilds the legacy folders: run with an OLD shrink binary (the one whose folders must keep loading) and a
# fixture folder (`cargo test -p shrink-fixture --test dump -- --ignored` writes one to $FIXTURE). Each folder's
# embeddings of texts.txt on the scalar kernels are stored beside it as NAME.npy.
# Usage: make.sh OLD_SHRINK FIXTURE_DIR
set -euo pipefail
old=$1 fix=$2
cd "$(dirname "$0")"
rm -rf clf int8 int8-static int4 fp16 sparse pruned trimmed ./*.npy
export SHRINK_NO_PROGRESS=1 SHRINK_ISA=scalar
q() { "$old" quantize clf --max-len 32 --threads 1 "$@" > /dev/null; }
"$old" finetune "$fix/model" --data "$fix/train.jsonl" --out clf --max-len 32 --epochs 1 --lr 1e-3 --threads 1 > /dev/null
q --scheme int8-dynamic --out int8
q --scheme int8-static --calib "$fix/train.jsonl" --calib-samples 32 --smooth-alpha 0.5 --out int8-static
q --scheme int4 --group 32 --embeddings int4 --out int4
q --scheme fp16 --embeddings int8 --out fp16
tmp=$(mktemp -d)
"$old" sparsify clf --sparsity 0.7 --out "$tmp/sparse" > /dev/null
"$old" quantize "$tmp/sparse" --scheme sparse --out sparse > /dev/null
rm -rf "$tmp"
"$old" prune clf --method l2 --heads 0.5 --ffn 0.5 --out pruned > /dev/null
"$old" trim-vocab clf --data "$fix/train.jsonl" --out trimmed > /dev/null
for d in clf int8 int8-static int4 fp16 sparse pruned trimmed; do
  "$old" embed "$d" --input texts.txt --output "$d.npy" --max-len 32 --threads 1 > /dev/null
done
du -sh .
