#!/usr/bin/env bash
# Cross-builds the kernel, format and runtime tests (and the C API) for aarch64 Linux and runs them under
# qemu-user at three CPU levels: cortex-a53 (NEON only), neoverse-n1 (plus dotprod), max (plus i8mm). Each level's
# kernels are tested against the scalar references in every run; SHRINK_ISA forces the runtime's golden tests down
# to each level too.
#   scripts/test-aarch64.sh            everything
#   scripts/test-aarch64.sh kernels    the kernel tests only, at the three levels
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-aarch64.sh
scripts/fetch-assets.sh >/dev/null
export RUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
# Its own target folder: another rustc would otherwise invalidate the host build's artifacts.
export CARGO_TARGET_DIR="$PWD/target/aarch64"
export SHRINK_NO_PROGRESS=1
target=aarch64-unknown-linux-gnu
what="${1:-all}"

run_at() { # cpu, then the test command
  local cpu="$1"; shift
  echo "== qemu -cpu $cpu: $*"
  CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="qemu-aarch64-static -L /usr/aarch64-linux-gnu -cpu $cpu" "$@"
}

# The level each CPU must reach: a failed feature detection would otherwise skip the upper levels' tests quietly.
for level in cortex-a53:neon neoverse-n1:dotprod max:i8mm; do
  SHRINK_EXPECT_BEST="${level#*:}" run_at "${level%%:*}" cargo test --release --target $target -p shrink-kernels --lib --tests
done
[[ "$what" == kernels ]] && exit 0

run_at max cargo test --release --target $target -p shrink-format
# Golden parity and the x86-64 embeddings (bit for bit on the scalar kernels) on the best level, then forced to
# each lower one. SmolLM2's golden runs its first prompt only (logits, every hidden state, the greedy text): all
# five took 9 of CI's minutes under the emulator, and the other four run the same kernels (x86-64 runs all five).
SHRINK_GOLDEN_PROMPTS=1 run_at max cargo test --release --target $target -p shrink-runtime
for isa in scalar neon dotprod; do
  SHRINK_ISA=$isa run_at max cargo test --release --target $target -p shrink-runtime --test golden --test cross_arch
done
# The C API, and examples/c built by the cross compiler and run under the emulator.
CC=aarch64-linux-gnu-gcc SHRINK_C_RUNNER="qemu-aarch64-static -L /usr/aarch64-linux-gnu -cpu max" \
  run_at max cargo test --release --target $target -p shrink-capi
