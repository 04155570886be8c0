#!/usr/bin/env bash
# Creates bench/.venv-llama with llama-cpp-python (which builds llama.cpp from its sdist, CPU only) and gguf, the
# decoder peers of bench/llama-compare.py. Separate from bench/.venv so neither install waits on the other.
# Idempotent: does nothing when the stamp exists and the imports still work.
set -euo pipefail

BENCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="$BENCH_DIR/.venv-llama"
PY="$VENV/bin/python"
STAMP="$VENV/.ok"
LLAMA_CPP_PYTHON_VERSION="${LLAMA_CPP_PYTHON_VERSION:-0.3.36}"

# Importing is not enough: decode a token, which is where a broken CPU path crashes.
MODEL="$BENCH_DIR/../assets/models/smollm2-135m/SmolLM2-135M-Instruct.Q4_1.gguf"
check() {
    "$PY" - "$MODEL" <<'PYEOF'
import sys, llama_cpp, gguf, numpy
llm = llama_cpp.Llama(model_path=sys.argv[1], n_ctx=64, n_threads=1, verbose=False)
llm.eval(llm.tokenize(b"The capital of France is"))
print("llama-cpp-python", llama_cpp.__version__, "decodes")
PYEOF
}
[[ -f "$MODEL" ]] || "$BENCH_DIR/../scripts/fetch-assets.sh"

if [[ -f "$STAMP" ]] && check >/dev/null 2>&1; then
    echo "llama venv ready: $VENV"
    exit 0
fi
rm -f "$STAMP"
[[ -x "$PY" ]] || python3 -m venv "$VENV"
# Built for this CPU's x86 extensions, as GGML_NATIVE would, but without ggml's AMX backend: on the AMX Xeons here
# its int8 matmul segfaults in llama_decode (ggml_backend_amx_mul_mat, llama-cpp-python 0.3.36), native or not.
# Every other path (AVX2, AVX-512, VNNI, BF16) stays on where the CPU has it. The build takes minutes on 2 cores.
flags=(-DGGML_NATIVE=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF)
has() { grep -qw "$1" /proc/cpuinfo; }
has avx2 && flags+=(-DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON)
has avx_vnni && flags+=(-DGGML_AVX_VNNI=ON)
has avx512f && flags+=(-DGGML_AVX512=ON)
has avx512_vnni && flags+=(-DGGML_AVX512_VNNI=ON)
has avx512_vbmi && flags+=(-DGGML_AVX512_VBMI=ON)
has avx512_bf16 && flags+=(-DGGML_AVX512_BF16=ON)
# llama-cpp-python's own dependencies, named so the --no-deps install below cannot upgrade numpy behind gguf.
"$PY" -m pip install --disable-pip-version-check -q gguf numpy typing-extensions diskcache jinja2
CMAKE_ARGS="${flags[*]}" CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" "$PY" -m pip install --disable-pip-version-check -q \
    --no-cache-dir --force-reinstall --no-deps "llama-cpp-python==$LLAMA_CPP_PYTHON_VERSION"
check
touch "$STAMP"
