#!/usr/bin/env bash
# `shrink compress` on the two real tasks: BBC News topics (the 128-token classifier from all-MiniLM-L6-v2) and
# SST-2 sentiment (64 tokens; a seeded 6000-row subset of ../shared/data/sst2/train.tsv trains, 1000 of its
# carved dev rows rank the trials, 2000 others are the held-out test). Each run resumes when run again.
# TASKS (default "bbc sst2"), BUDGET (3h), OBJECTIVE (size) and MAX_DROP (1.0) can be set in the environment.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/fetch-assets.sh
cargo build --release --quiet -p shrink-cli
shrink=target/release/shrink
base=assets/models/all-MiniLM-L6-v2
budget="${BUDGET:-3h}"
objective="${OBJECTIVE:-size}"
for task in ${TASKS:-bbc sst2}; do
  case "$task" in
    bbc)
      "$shrink" compress "$base" --task classify --data assets/data/bbc/train.jsonl --dev-fraction 0.1 \
        --test assets/data/bbc/test.jsonl --max-drop "${MAX_DROP:-1.0}" --objective "$objective" --time-budget "$budget" \
        --out "out/compress-bbc-$objective-$budget" ;;
    sst2)
      sst=assets/data/sst2
      [[ -f "$sst/dev.jsonl" ]] || "$shrink" data tsv --input ../shared/data/sst2/train.tsv --labels negative,positive --out "$sst"
      # Lines FROM..TO (1-based) of a seeded shuffle of a file, written whole or not at all.
      shuffled() {
        python3 -c 'import random,sys; l=open(sys.argv[1]).readlines(); random.Random(0).shuffle(l); open(sys.argv[4]+".tmp","w").writelines(l[int(sys.argv[2])-1:int(sys.argv[3])])' "$@"
        mv "$4.tmp" "$4"
      }
      [[ -f "$sst/train-6k.jsonl" ]] || shuffled "$sst/train.jsonl" 1 6000 "$sst/train-6k.jsonl"
      [[ -f "$sst/dev-1k.jsonl" ]] || shuffled "$sst/dev.jsonl" 1 1000 "$sst/dev-1k.jsonl"
      [[ -f "$sst/test-2k.jsonl" ]] || shuffled "$sst/dev.jsonl" 1001 3000 "$sst/test-2k.jsonl"
      "$shrink" compress "$base" --task classify --data "$sst/train-6k.jsonl" --dev "$sst/dev-1k.jsonl" --test "$sst/test-2k.jsonl" \
        --max-drop "${MAX_DROP:-1.0}" --objective "$objective" --latency-at 1x64 --time-budget "$budget" \
        --out "out/compress-sst2-$objective-$budget" ;;
    *) echo "unknown task $task (bbc or sst2)" >&2; exit 1 ;;
  esac
done
