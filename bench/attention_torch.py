"""PyTorch's full attention (BertModel with SDPA) at one T: the peer of bench/attention_curve.py.

Loads a model folder shrink wrote (safetensors in BERT's names, positions copied out to 4096), runs batch 1 at T
tokens on 1 thread under torch.no_grad, and prints one JSON line: the median ms of --runs forwards, and the peak RSS
after loading and after running (MB), as `shrink bench --json` reports them.
"""

import argparse
import json
import os
import resource
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
import torch  # noqa: E402
from transformers import BertModel  # noqa: E402


def peak_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--t", type=int, required=True)
    ap.add_argument("--runs", type=int, default=5)
    a = ap.parse_args()
    torch.set_num_threads(1)
    model = BertModel.from_pretrained(a.model, attn_implementation="sdpa", add_pooling_layer=False).eval()
    ids = torch.tensor([[101] + [1000 + (i * 7919) % 28000 for i in range(a.t - 2)] + [102]])
    mask = torch.ones_like(ids)
    loaded = peak_mb()
    times = []
    with torch.no_grad():
        model(input_ids=ids, attention_mask=mask)  # warm-up
        for _ in range(a.runs):
            start = time.perf_counter()
            model(input_ids=ids, attention_mask=mask)
            times.append((time.perf_counter() - start) * 1000)
    print(json.dumps({"median_ms": statistics.median(times), "loaded_rss_mb": loaded, "run_peak_rss_mb": peak_mb(), "peak_rss_mb": peak_mb(),
                      "weights_mb": sum(p.numel() * p.element_size() for p in model.parameters()) / 1e6, "torch": torch.__version__,
                      "attn_implementation": model.config._attn_implementation}))


if __name__ == "__main__":
    main()
