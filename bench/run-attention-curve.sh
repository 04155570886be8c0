#!/usr/bin/env bash
# Speed and memory of full, sliding-128 (+[CLS]) and linear (elu + 1, Hedgehog) attention at T = 128 .. 4096 on MiniLM
# (positions copied to 4096), fp32 and int8, 1 thread (issue 19), with PyTorch's SDPA full attention on the same
# weights as the peer (bench/setup-venv.sh makes its venv): builds shrink, converts the models once, runs
# bench/attention_curve.py (~15 minutes). Arguments go to the script (e.g. --rounds 5 --precisions fp32).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

shrink=target/release/shrink
base=assets/models/all-MiniLM-L6-v2
work=out/attention-curve
[[ -f "$base/config.json" ]] || scripts/fetch-assets.sh
cargo build --release -p shrink-cli
mkdir -p "$work"
make() { # name flags...
  local name=$1; shift
  if [[ ! -f "$work/$name/config.json" || "$work/$name/config.json" -ot "$shrink" ]]; then
    "$shrink" attention "$base" "$@" --max-len 4096 --out "$work/$name" --force
    "$shrink" quantize "$work/$name" --scheme int8-dynamic --out "$work/$name-int8" --force
  fi
}
make full --to full
make sliding --to sliding --window 128 --global cls
make linear --to linear --feature-map elu
make hedgehog --to linear --feature-map hedgehog
bench/setup-venv.sh
exec python3 bench/attention_curve.py --work "$work" --torch bench/.venv/bin/python "$@"
