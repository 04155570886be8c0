#!/usr/bin/env bash
# Fuzzing (fuzz/, cargo-fuzz + libFuzzer), installing the pinned cargo-fuzz when it is missing:
#   scripts/fuzz.sh smoke                     every target for SMOKE_SECONDS (10) on the committed corpus, new
#                                             inputs kept in a temp folder (scripts/test.sh runs this)
#   scripts/fuzz.sh run SECONDS [TARGET...]   a campaign: each target (default: all) for SECONDS, one after the
#                                             other; new inputs go into fuzz/corpus/TARGET (minimise them with
#                                             `cargo fuzz cmin TARGET` before committing)
# Prints executions, exec/s, corpus size and crashes per target; exits 1 if any target crashed (the input is
# in fuzz/artifacts/TARGET/; `cargo fuzz run TARGET fuzz/artifacts/TARGET/crash-...` replays it).
# cargo-fuzz passes nightly flags (-Zsanitizer=address, sancov); RUSTC_BOOTSTRAP=1 lets stable rustc take them.
# FUZZ_SANITIZER=none builds without AddressSanitizer (faster; bounds checks still catch safe-code errors).
set -euo pipefail
cd "$(dirname "$0")/.."
CARGO_FUZZ_VERSION=0.13.1
TARGETS=(safetensors config tokenizer jsonl quantized)
SANITIZER=${FUZZ_SANITIZER:-address}

mode=${1:-}
case "$mode" in
  smoke) seconds=${SMOKE_SECONDS:-10}; targets=("${TARGETS[@]}") ;;
  run) seconds=${2:?usage: scripts/fuzz.sh run SECONDS [TARGET...]}; shift 2
       if [ $# -gt 0 ]; then targets=("$@"); else targets=("${TARGETS[@]}"); fi ;;
  *) echo "usage: scripts/fuzz.sh smoke | run SECONDS [TARGET...]" >&2; exit 2 ;;
esac

if [ "$(cargo fuzz --version 2>/dev/null)" != "cargo-fuzz $CARGO_FUZZ_VERSION" ]; then
  cargo install cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked
fi
export RUSTC_BOOTSTRAP=1
# The targets write their inputs to files (the readers map or read files): keep those in RAM where possible.
scratch=$(mktemp -d "$( [ -w /dev/shm ] && echo /dev/shm || echo "${TMPDIR:-/tmp}")/shrink-fuzz.XXXXXX")
trap 'rm -rf "$scratch"' EXIT
export TMPDIR=$scratch

cargo fuzz build -s "$SANITIZER" # all targets in one cargo run; `fuzz run` below then finds them built
failed=0
printf '%-12s %12s %8s %8s %8s\n' target executions exec/s corpus crashes
for t in "${targets[@]}"; do
  corpus=(fuzz/corpus/"$t")
  [ "$mode" = smoke ] && corpus=("$scratch/corpus-$t" fuzz/corpus/"$t")
  mkdir -p "${corpus[@]}" fuzz/artifacts/"$t"
  log=$scratch/$t.log
  before=$(ls fuzz/artifacts/"$t" 2>/dev/null | wc -l)
  # -timeout: an input running 10 s is a hang; libFuzzer's 2 GB RSS limit makes a runaway allocation a crash.
  cargo fuzz run -s "$SANITIZER" "$t" "${corpus[@]}" -- -max_total_time="$seconds" -timeout=10 -print_final_stats=1 \
    > "$log" 2>&1 || failed=1
  crashes=$(( $(ls fuzz/artifacts/"$t" 2>/dev/null | wc -l) - before ))
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log")
  size=$(grep -o 'corp: [0-9]*/[0-9]*[a-zA-Z]*' "$log" | tail -1 | cut -d' ' -f2)
  printf '%-12s %12s %8s %8s %8s\n' "$t" "${runs:-?}" "${rate:-?}" "${size:-?}" "$crashes"
  if [ "$crashes" -gt 0 ] || [ -z "$runs" ]; then
    failed=1
    tail -40 "$log" >&2
  fi
done
exit $failed
