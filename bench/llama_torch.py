#!/usr/bin/env python3
"""PyTorch fp32 peer of bench/llama_compare.py: transformers' LlamaForCausalLM on the dequantized GGUF weights.

A line protocol on stdin/stdout so the model loads once: each line "THREADS PP TG" runs a PP-token prompt from an
empty cache, then TG tokens one at a time from an empty cache (as llama-bench times them), and answers one JSON line
{"pp_s": ..., "tg_s": ...}.

    bench/.venv/bin/python bench/llama_torch.py MODEL.gguf
"""
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
import torch  # noqa: E402
from transformers import LlamaForCausalLM  # noqa: E402


def main():
    path = Path(sys.argv[1]).resolve()
    model = LlamaForCausalLM.from_pretrained(path.parent, gguf_file=path.name, torch_dtype=torch.float32).eval()
    vocab = model.config.vocab_size
    gen = torch.Generator().manual_seed(0)
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        threads, pp, tg = map(int, line.split())
        torch.set_num_threads(threads)
        prompt = torch.randint(vocab, (1, pp), generator=gen)
        steps = torch.randint(vocab, (tg, 1, 1), generator=gen)
        with torch.inference_mode():
            s = time.perf_counter()
            model(prompt, use_cache=True, logits_to_keep=1)
            pp_s = time.perf_counter() - s
            past, s = None, time.perf_counter()
            for ids in steps:
                past = model(ids, past_key_values=past, use_cache=True).past_key_values
            tg_s = time.perf_counter() - s
        print(json.dumps({"pp_s": pp_s, "tg_s": tg_s}), flush=True)


if __name__ == "__main__":
    main()
