#!/usr/bin/env bash
# The whole test suite: fetches the example model and data if missing, then runs every test in release mode
# (the numeric tests are too slow unoptimised), then the aarch64 suite under emulation.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/fetch-assets.sh
# ONNX Runtime's library for the export tests (crates/shrink-cli/tests/onnx.rs).
export ORT_DYLIB_PATH="$(scripts/fetch-ort.sh)"
# The report test opens report.html in headless Chromium (Debian's package).
if ! command -v chromium >/dev/null && ! command -v chromium-browser >/dev/null; then
  echo "installing chromium for the report test"
  sudo=(); [[ "$(id -u)" != 0 ]] && sudo=(sudo)
  "${sudo[@]}" apt-get update -qq && DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq chromium >/dev/null
fi
export SHRINK_NO_PROGRESS=1
cargo test --release --workspace "$@"
# Golden parity again on the scalar kernels (the SIMD level is picked at run time; CI may have a different CPU).
# --workspace keeps the feature set of the run above, so nothing is rebuilt.
SHRINK_ISA=scalar cargo test --release --workspace --test golden --test golden_arch
# A few seconds of every fuzz target on its committed corpus (fuzz/; a campaign is `scripts/fuzz.sh run 600`).
scripts/fuzz.sh smoke
# The aarch64 build: kernels, format, runtime (golden parity, the x86-64 outputs) and the C API under qemu-user at
# three CPU levels (~15 min on 2 cores; installs its cross toolchain first).
scripts/test-aarch64.sh
