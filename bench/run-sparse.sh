#!/usr/bin/env bash
# Where unstructured sparsity turns into speed on the runtime: one-shot magnitude pruning of MODEL (default the base
# MiniLM) at several sparsities, each timed as a dense fp32 folder (zeros multiplied) and as `--scheme sparse` (the
# sparse kernel), interleaved, a fresh process per run, batch 1 x SEQ tokens on 1 thread; medians into
# bench/results/sparse.{json,md}. Accuracy is not measured here (one-shot pruning without recovery): see
# `shrink sparsify --data` for gradual pruning while fine-tuning.
#   bench/run-sparse.sh [MODEL] [ROUNDS]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
model="${1:-assets/models/all-MiniLM-L6-v2}"
rounds="${2:-5}"
seq="${SEQ:-128}"
shrink=target/release/shrink
[[ -x "$shrink" ]] || cargo build --release --quiet -p shrink-cli
[[ -f "$model/model.safetensors" ]] || scripts/fetch-assets.sh
work=bench/work/sparse
mkdir -p "$work" bench/results
export SHRINK_NO_PROGRESS=1
levels=(0.5 0.75 0.9 0.95)
for s in "${levels[@]}"; do
    [[ -f "$work/dense-$s/model.safetensors" ]] || "$shrink" sparsify "$model" --sparsity "$s" --out "$work/dense-$s" 2>/dev/null
    [[ -f "$work/sparse-$s/model.safetensors" ]] || "$shrink" quantize "$work/dense-$s" --scheme sparse --out "$work/sparse-$s" >/dev/null 2>&1
done
runs="$work/runs.jsonl"
: > "$runs"
for r in $(seq 1 "$rounds"); do
    for s in "${levels[@]}"; do
        for kind in dense sparse; do
            j=$("$shrink" --threads 1 bench "$work/$kind-$s" --seq "$seq" --runs 20 --json)
            echo "{\"round\": $r, \"sparsity\": $s, \"kind\": \"$kind\", \"bench\": $j}" >> "$runs"
        done
    done
done
python3 - "$runs" "$seq" "$work" <<'PY'
import json, os, statistics, sys, datetime
runs, seq, work = sys.argv[1], sys.argv[2], sys.argv[3]
rows = [json.loads(l) for l in open(runs)]
levels = sorted({r["sparsity"] for r in rows})
out = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"), "seq": int(seq), "levels": []}
md = [f"# Unstructured sparsity on the runtime ({out['date']})", "",
      f"One-shot magnitude pruning of the encoder Linears, batch 1 x {seq}, 1 thread, medians over interleaved rounds",
      "(a fresh process per run; `bench/run-sparse.sh`). dense = fp32 folder with the zeros multiplied; sparse =",
      "`quantize --scheme sparse` on the sparse kernel. Load average: " + " / ".join(f"{x:.1f}" for x in os.getloadavg()) + ".", "",
      "| sparsity | dense ms | sparse ms | sparse / dense | dense MB | sparse MB |", "|---:|---:|---:|---:|---:|---:|"]
for s in levels:
    med = {k: statistics.median(r["bench"]["median_ms"] for r in rows if r["sparsity"] == s and r["kind"] == k) for k in ("dense", "sparse")}
    mb = {k: os.path.getsize(f"{work}/{k}-{s}/model.safetensors") / 1e6 for k in ("dense", "sparse")}
    out["levels"].append({"sparsity": s, "dense_ms": med["dense"], "sparse_ms": med["sparse"], "dense_mb": mb["dense"], "sparse_mb": mb["sparse"]})
    md.append(f"| {s:.2f} | {med['dense']:.1f} | {med['sparse']:.1f} | {med['sparse'] / med['dense']:.2f} | {mb['dense']:.1f} | {mb['sparse']:.1f} |")
json.dump(out, open("bench/results/sparse.json", "w"), indent=1)
open("bench/results/sparse.md", "w").write("\n".join(md) + "\n")
print("\n".join(md))
PY
