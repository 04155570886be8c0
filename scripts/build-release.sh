#!/usr/bin/env bash
# Builds the release artifacts for x86_64 and aarch64 Linux with the `dist` profile (fat LTO, stripped): the
# `shrink` binary and libshrink (.so, .a) with include/shrink.h, into dist/<target>/, and writes their sizes to
# bench/results/release-sizes.json.
#   scripts/build-release.sh                 both targets
#   scripts/build-release.sh x86_64          one of them
set -euo pipefail
cd "$(dirname "$0")/.."
targets=("$@"); [[ $# -gt 0 ]] || targets=(x86_64 aarch64)
# The aarch64 runtime library's budget (issue 18): phones ship it inside every app.
MAX_AARCH64_LIB=$((4 * 1024 * 1024))

build() { # target triple, cargo's target folder, then cargo's extra environment
  local triple="$1" dir="$2"; shift 2
  echo "== $triple"
  env CARGO_TARGET_DIR="$dir" "$@" cargo build --profile dist --target "$triple" -p shrink-cli -p shrink-capi
  mkdir -p "dist/$triple"
  cp "$dir/$triple/dist/"{shrink,libshrink.so,libshrink.a} include/shrink.h "dist/$triple/"
  # The static library keeps its symbols for the app's linker; its debug sections go.
  local strip=strip; [[ "$triple" == aarch64-* ]] && strip=aarch64-linux-gnu-strip
  "$strip" --strip-debug "dist/$triple/libshrink.a"
}

for t in "${targets[@]}"; do
  case "$t" in
    x86_64) build x86_64-unknown-linux-gnu target ;;
    aarch64)
      scripts/setup-aarch64.sh
      # Its own target folder, as in scripts/test-aarch64.sh.
      build aarch64-unknown-linux-gnu target/aarch64 RUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc \
        CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc ;;
    *) echo "build-release: unknown target '$t' (x86_64 or aarch64)" >&2; exit 2 ;;
  esac
done

mkdir -p bench/results
python3 - "$MAX_AARCH64_LIB" <<'PY'
import json, os, sys
limit = int(sys.argv[1])
sizes = {t: {f: os.path.getsize(f"dist/{t}/{f}") for f in sorted(os.listdir(f"dist/{t}"))}
         for t in sorted(os.listdir("dist")) if os.path.isdir(f"dist/{t}")}
json.dump({"profile": "dist (fat LTO, codegen-units 1, stripped)", "bytes": sizes}, open("bench/results/release-sizes.json", "w"), indent=2)
for t, files in sizes.items():
    for f, n in files.items():
        print(f"{t:28} {f:14} {n / 2**20:7.2f} MiB")
lib = sizes.get("aarch64-unknown-linux-gnu", {}).get("libshrink.so")
if lib is not None and lib > limit:
    sys.exit(f"build-release: aarch64 libshrink.so is {lib} bytes, above the {limit}-byte budget")
PY
