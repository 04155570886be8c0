#!/usr/bin/env bash
# Efficient attention on long BBC articles (issue 19): fine-tunes the full-attention MiniLM classifier at 512 tokens
# (the reference), converts it to sliding-128 (+[CLS] global) and linear (elu + 1) at 512 and to sliding-128 at 1024
# (positions copied Longformer-style), recovers each with a task fine-tune at its length, and evaluates all on the
# BBC test split on the runtime. Linear attention also goes through attention transfer before its fine-tune, with
# elu + 1 (query and key projections trained) and with Hedgehog's learned feature maps (maps trained).
# Results: bench/results/long_attention_quality.{json,md}. ~100 min on 2 cores; finished steps are kept.
# Then the speed / memory curve: bench/attention_curve.py.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

shrink=target/release/shrink
base=assets/models/all-MiniLM-L6-v2
data=assets/data/bbc
work=${WORK:-out/long-attention}
epochs=${EPOCHS:-2}
recover=${RECOVER_EPOCHS:-1}
[[ -f "$base/config.json" && -f "$data/train.jsonl" ]] || scripts/fetch-assets.sh
cargo build --release -p shrink-cli
mkdir -p "$work" bench/results/long_attention

run() { echo "+ $*" >&2; "$shrink" "$@"; }
evaluate() { # name model max_len
  local json="bench/results/long_attention/$1.json"
  [[ -f "$json" && "$json" -nt "$2/config.json" ]] && return
  run eval "$2" --task classify --data "$data/test.jsonl" --max-len "$3" --json > "bench/results/long_attention/$1.json"
}

# The reference: full attention fine-tuned and evaluated at 512 tokens, and at 128 (what the demo uses).
[[ -f "$work/full-512/config.json" ]] || run finetune "$base" --data "$data/train.jsonl" --max-len 512 --epochs "$epochs" --out "$work/full-512" --force
evaluate full-512 "$work/full-512" 512
evaluate full-512-at-128 "$work/full-512" 128

convert() { # name max_len model-len attention flags...
  local name=$1 len=$2; shift 2
  [[ -f "$work/$name-converted/config.json" ]] || run attention "$work/full-512" "$@" --out "$work/$name-converted" --force
  evaluate "$name-unrecovered" "$work/$name-converted" "$len"
  [[ -f "$work/$name/config.json" ]] || run finetune "$work/$name-converted" --data "$data/train.jsonl" --max-len "$len" --epochs "$recover" --out "$work/$name" --force
  evaluate "$name" "$work/$name" "$len"
}
convert sliding128-512 512 --to sliding --window 128 --global cls
convert linear-512 512 --to linear --feature-map elu
convert sliding128-1024 1024 --to sliding --window 128 --global cls --max-len 1024

transfer() { # name max_len lr attention flags...: convert, attention transfer (1 epoch), then the task fine-tune
  local name=$1 len=$2 lr=$3; shift 3
  [[ -f "$work/$name-converted/config.json" ]] || run attention "$work/full-512" "$@" --out "$work/$name-converted" --force
  evaluate "$name-unrecovered" "$work/$name-converted" "$len"
  [[ -f "$work/$name-at/config.json" ]] || run attention-transfer "$work/$name-converted" --data "$data/train.jsonl" --max-len "$len" --lr "$lr" --epochs 1 --batch 8 --out "$work/$name-at" --force
  evaluate "$name-transferred" "$work/$name-at" "$len"
  [[ -f "$work/$name/config.json" ]] || run finetune "$work/$name-at" --data "$data/train.jsonl" --max-len "$len" --epochs "$recover" --out "$work/$name" --force
  evaluate "$name" "$work/$name" "$len"
}
transfer hedgehog-512 512 3e-3 --to linear --feature-map hedgehog
transfer linear-at-512 512 1e-4 --to linear --feature-map elu

python3 - "$work" "$epochs" "$recover" <<'PY'
import json, pathlib, sys, datetime, platform, subprocess
work, epochs, recover = sys.argv[1], sys.argv[2], sys.argv[3]
res = pathlib.Path("bench/results/long_attention")
cpu = next((l.split(":", 1)[1].strip() for l in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines() if l.startswith("Model name")), platform.processor())
rows = [
    ("full-512-at-128", "full", 128, "fine-tuned at 512, truncated at 128"),
    ("full-512", "full", 512, f"fine-tuned {epochs} epochs at 512 (the reference)"),
    ("sliding128-512-unrecovered", "sliding-128 + [CLS]", 512, "converted, no training"),
    ("sliding128-512", "sliding-128 + [CLS]", 512, f"+ {recover} epoch fine-tune at 512"),
    ("linear-512-unrecovered", "linear (elu + 1)", 512, "converted, no training"),
    ("linear-512", "linear (elu + 1)", 512, f"+ {recover} epoch fine-tune at 512"),
    ("sliding128-1024-unrecovered", "sliding-128 + [CLS]", 1024, "positions copied to 1024, no training"),
    ("sliding128-1024", "sliding-128 + [CLS]", 1024, f"+ {recover} epoch fine-tune at 1024"),
    ("linear-at-512-transferred", "linear (elu + 1)", 512, "converted, + 1 epoch attention transfer (Q, K)"),
    ("linear-at-512", "linear (elu + 1)", 512, f"+ attention transfer, + {recover} epoch fine-tune at 512"),
    ("hedgehog-512-unrecovered", "linear (Hedgehog)", 512, "converted (maps at the identity), no training"),
    ("hedgehog-512-transferred", "linear (Hedgehog)", 512, "converted, + 1 epoch attention transfer (maps)"),
    ("hedgehog-512", "linear (Hedgehog)", 512, f"+ attention transfer, + {recover} epoch fine-tune at 512"),
]
out = []
for name, kind, t, how in rows:
    r = json.loads((res / f"{name}.json").read_text())
    out.append({"name": name, "attention": kind, "max_len": t, "how": how, "accuracy": r["accuracy"], "macro_f1": r["macro_f1"]})
meta = {"cpu": cpu, "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"), "data": "BBC News test split (448 articles), bodies at full length, truncated at max_len", "base": "all-MiniLM-L6-v2"}
pathlib.Path("bench/results/long_attention_quality.json").write_text(json.dumps({"meta": meta, "rows": out}, indent=1) + "\n")
md = [f"# Long BBC articles: attention variants (MiniLM classifier)\n", f"{meta['data']}. Host: {cpu}, {meta['date']}. Evaluated on shrink's runtime.\n",
      "| attention | max_len | how | accuracy | macro F1 |", "| --- | ---: | --- | ---: | ---: |"]
md += [f"| {r['attention']} | {r['max_len']} | {r['how']} | {100 * r['accuracy']:.2f}% | {r['macro_f1']:.4f} |" for r in out]
pathlib.Path("bench/results/long_attention_quality.md").write_text("\n".join(md) + "\n")
print("\n".join(md))
PY
