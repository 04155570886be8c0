#!/usr/bin/env bash
# Fetches ONNX Runtime's shared library from its PyPI wheel into assets/ort/ (the ONNX export tests run exported
# models on it through the `ort` crate, loaded at run time). Idempotent; prints the library's path.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
version=1.32.0
dest="$root/assets/ort"
lib="$dest/libonnxruntime.so.$version"
if [[ ! -f "$lib" ]]; then
  wheels="$root/assets/wheels"
  mkdir -p "$wheels" "$dest"
  ls "$wheels"/onnxruntime-$version-*.whl >/dev/null 2>&1 ||
    python3 -m pip download --quiet --no-deps --only-binary :all: --dest "$wheels" "onnxruntime==$version"
  tmp="$(mktemp -d "$dest/.unzip.XXXXXX")"
  python3 - "$wheels"/onnxruntime-$version-*.whl "$tmp" <<'PY'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    for n in z.namelist():
        if n.startswith("onnxruntime/capi/libonnxruntime.so"):
            z.extract(n, sys.argv[2])
PY
  mv "$tmp/onnxruntime/capi/libonnxruntime.so.$version" "$lib"
  rm -rf "$tmp"
fi
echo "$lib"
