#!/usr/bin/env bash
# shrink vs llama.cpp (and PyTorch fp32) on SmolLM2-135M: sets up both venvs, builds shrink, makes shrink's int8
# (rounded to nearest), int4 (GPTQ in activation order + the AWQ search) and mixed int4 / int8 (the same, within +5%
# on held-out text) files from the Q4_1 weights, calibrated on 8192 tokens of WikiText-2 valid, then runs
# bench/llama_compare.py (arguments go to it, e.g. --rounds 3 --no-torch). ~25 min on 2 cores once the venvs exist.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

scripts/fetch-assets.sh
bench/setup-llama.sh
[[ " $* " == *" --no-torch "* ]] || bench/setup-venv.sh
cargo build --release -p shrink-cli
base=assets/models/smollm2-135m/SmolLM2-135M-Instruct.Q4_1.gguf
valid=../shared/data/wikitext-2/valid.txt
mkdir -p out
# With activations in blocks of 32, plain rounding is the best int8 (scaling only moves error into the weights);
# int4 takes GPTQ and the AWQ search. The files are named by recipe, so a changed recipe is never a stale file.
[[ -f out/smollm2-int8-rtn.gguf ]] || target/release/shrink quantize "$base" --scheme int8-dynamic --out out/smollm2-int8-rtn.gguf
[[ -f out/smollm2-int4-gptq-awq.gguf ]] || target/release/shrink quantize "$base" --scheme int4 --gptq --act-order --awq \
    --calib "$valid" --out out/smollm2-int4-gptq-awq.gguf
# Mixed: the same int4 with the sites that matter most in int8, as few as keep held-out valid text within +5%.
[[ -f out/smollm2-int4-mixed5.gguf ]] || target/release/shrink quantize "$base" --scheme int4 --gptq --act-order --awq \
    --max-ppl-increase 5 --calib "$valid" --out out/smollm2-int4-mixed5.gguf
exec bench/.venv-llama/bin/python bench/llama_compare.py --int8 out/smollm2-int8-rtn.gguf --int4 out/smollm2-int4-gptq-awq.gguf \
    --mixed out/smollm2-int4-mixed5.gguf "$@"
