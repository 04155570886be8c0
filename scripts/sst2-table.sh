#!/usr/bin/env bash
# The classic SST-2 table from a finished `scripts/compress.sh` SST-2 search (OUT, default
# out/compress-sst2-size-$BUDGET): its teacher fp32, the teacher int8 static, 14 of its 72 heads pruned without and
# with one epoch of distillation recovery, and the compressed model, each scored on the held-out test rows and timed
# on the runtime (1 x 64, 1 thread).
set -euo pipefail
cd "$(dirname "$0")/.."
shrink=target/release/shrink
out="${1:-out/compress-sst2-size-${BUDGET:-3h}}"
sst=assets/data/sst2
teacher="$(python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print(next(t["dir"] for t in r["trials"] if t["id"] == r["teacher"]))' "$out/report.json")"
t="$out/table"
mkdir -p "$t"
[[ -f "$t/int8-static/config.json" ]] || "$shrink" quantize "$teacher" --scheme int8-static --calib "$sst/train-6k.jsonl" --out "$t/int8-static"
[[ -f "$t/heads14/config.json" ]] || "$shrink" prune "$teacher" --heads 0.1945 --data "$sst/train-6k.jsonl" --out "$t/heads14"
[[ -f "$t/heads14-recovered/config.json" ]] || "$shrink" prune "$teacher" --heads 0.1945 --data "$sst/train-6k.jsonl" --recover distill --epochs 1 --out "$t/heads14-recovered"
rows=()
for m in "$teacher" "$t/int8-static" "$t/heads14" "$t/heads14-recovered" "$out/model"; do
  rows+=("$m" "$("$shrink" eval "$m" --task classify --data "$sst/test-2k.jsonl" --max-len 64 --json)" "$("$shrink" --threads 1 bench "$m" --batch 1 --seq 64 --runs 30 --json)")
done
python3 - "${rows[@]}" <<'PY'
import json, sys
a = sys.argv[1:]
names = ["fp32 teacher", "int8 static", "14 of 72 heads pruned", "14 heads pruned + 1 epoch distillation", "shrink compress"]
print("| model | accuracy (test, 2000) | file | latency 1 x 64, 1 thread |")
print("|---|---|---|---|")
for i, n in enumerate(names):
    r, b = json.loads(a[3 * i + 1]), json.loads(a[3 * i + 2])
    print(f"| {n} | {100 * r['accuracy']:.2f}% | {b['file_mb']:.1f} MB | {b['median_ms']:.2f} ms |")
PY
