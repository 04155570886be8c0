#!/usr/bin/env bash
# Creates bench/.venv with PyTorch (run on CPU), transformers, onnx, onnxruntime and gguf (with which transformers
# reads the decoder's GGUF file) for the comparison benchmarks. Idempotent: does nothing when the stamp exists and
# the imports still work.
set -euo pipefail

BENCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="$BENCH_DIR/.venv"
PY="$VENV/bin/python"
STAMP="$VENV/.ok"
TORCH_VERSION="${TORCH_VERSION:-2.15.0}"

check() {
    "$PY" - <<'EOF'
import torch, transformers, safetensors, numpy, onnx, onnxruntime, gguf, accelerate
x = torch.randn(3)
assert torch.isfinite(x @ x)  # a real CPU kernel runs
print(f"torch {torch.__version__}, transformers {transformers.__version__}, "
      f"onnxruntime {onnxruntime.__version__}")
EOF
}

if [[ -f "$STAMP" ]] && check >/dev/null 2>&1; then
    echo "bench venv ready: $VENV"
    exit 0
fi
rm -f "$STAMP"

[[ -x "$PY" ]] || python3 -m venv "$VENV"
PIP=("$PY" -m pip install --disable-pip-version-check -q)

# Only PyPI is reachable, and its Linux torch wheel is the CUDA build. Its
# libtorch.so links libtorch_cuda.so, which links cuBLAS, cuDNN, NCCL, ... so
# torch does not even import without the nvidia-* libraries (~3 GB): those we
# must install. What it does not need on CPU are the Python-level GPU packages
# triton (the inductor GPU compiler) and cuda-bindings, so install torch with
# --no-deps and then its declared requirements minus those two.
"${PIP[@]}" --no-deps "torch==$TORCH_VERSION"
mapfile -t TORCH_REQS < <("$PY" - <<'EOF'
import re
from importlib.metadata import requires
for r in requires("torch"):
    spec, _, marker = r.partition(";")
    name = re.match(r"[\w.-]+", spec)[0]
    # Markers left are platform_system == "Linux" / python_version bounds, true here.
    if "extra ==" not in marker and name not in ("triton", "cuda-bindings"):
        print(spec.strip())
EOF
)
# pip then warns that triton and cuda-bindings are missing: expected.
"${PIP[@]}" "${TORCH_REQS[@]}"
# None of these depends on torch, so pip does not go back for triton.
"${PIP[@]}" transformers safetensors numpy onnx onnxruntime gguf
# transformers wants accelerate to read a GGUF file; it depends on torch, so --no-deps (its other needs are here).
"${PIP[@]}" --no-deps accelerate psutil

check
touch "$STAMP"
echo "bench venv ready: $VENV ($(du -sh "$VENV" | cut -f1))"
