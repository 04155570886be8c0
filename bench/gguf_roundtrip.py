#!/usr/bin/env python3
"""llama.cpp (llama-cpp-python) on a GGUF file that went through an HF folder and back (issue 20).

SmolLM2's published Q4_1 file -> `shrink convert` (HF Llama folder, f32) -> `shrink convert DIR --out F.gguf` (f32
GGUF with the metadata rebuilt from config.json and tokenizer.json). llama.cpp loads both files; the check is that
its own tokenizer, built from each file's metadata, gives the same ids on WikiText-2 test, and that its perplexity
on the golden protocol (first 4096 tokens, windows of 512) agrees between the two files (the weights are the same
values, Q4_1 blocks in one and f32 in the other). Writes bench/results/gguf_roundtrip.json.

    bench/.venv-llama/bin/python bench/gguf_roundtrip.py --base BASE.gguf --back BACK.gguf
"""
import argparse
import json
import platform
import time
from pathlib import Path

import llama_cpp

from llama_compare import TEST, llama_perplexity

ap = argparse.ArgumentParser()
ap.add_argument("--base", required=True)
ap.add_argument("--back", required=True)
args = ap.parse_args()
text = Path(TEST).read_text().encode()
ids = {}
for name, path in (("base", args.base), ("back", args.back)):
    llm = llama_cpp.Llama(model_path=path, n_ctx=64, vocab_only=True, verbose=False)
    ids[name] = llm.tokenize(text, add_bos=False, special=False)
    del llm
same_ids = ids["base"] == ids["back"]
ppl = {name: llama_perplexity(path, ids["base"][:4096], 512)[0] for name, path in (("base", args.base), ("back", args.back))}
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.processor())
res = {
    "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "cpu": cpu, "llama_cpp_python": llama_cpp.__version__,
    "test_tokens": len(ids["base"]), "same_token_ids": same_ids, "llama_cpp_perplexity": ppl,
    "relative_difference": ppl["back"] / ppl["base"] - 1,
}
Path("bench/results").mkdir(parents=True, exist_ok=True)
Path("bench/results/gguf_roundtrip.json").write_text(json.dumps(res, indent=2) + "\n")
print(json.dumps(res, indent=2))
assert same_ids, "llama.cpp tokenizes differently from the rebuilt metadata"
