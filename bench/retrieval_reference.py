#!/usr/bin/env python3
"""PyTorch reference for `shrink eval --task retrieval` on BBC test: transformers BertModel, truncation at
--max-len, mean pooling over the attention mask, L2 normalisation; each title ranks all bodies by cosine.

    bench/.venv/bin/python bench/retrieval_reference.py --max-len 128
"""
import argparse
import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
import torch  # noqa: E402
from transformers import AutoTokenizer, BertModel  # noqa: E402

ap = argparse.ArgumentParser()
ap.add_argument("--model", default="assets/models/all-MiniLM-L6-v2")
ap.add_argument("--data", default="assets/data/bbc/test.jsonl")
ap.add_argument("--max-len", type=int, default=128)
args = ap.parse_args()

tok = AutoTokenizer.from_pretrained(args.model)
model = BertModel.from_pretrained(args.model).eval()
rows = [json.loads(line) for line in open(args.data)]


def embed(texts):
    out = []
    for i in range(0, len(texts), 32):
        b = tok(texts[i:i + 32], padding=True, truncation=True, max_length=args.max_len, return_tensors="pt")
        with torch.inference_mode():
            h = model(**b).last_hidden_state
        m = b["attention_mask"].unsqueeze(-1).float()
        out.append(torch.nn.functional.normalize((h * m).sum(1) / m.sum(1), dim=-1))
    return torch.cat(out)


scores = embed([r["title"] for r in rows]) @ embed([r["body"] for r in rows]).T
own = scores.diag()
# As `shrink eval`: ties count against the query (BBC test holds duplicated bodies), so rank = the docs not scoring
# below its own, its own doc included; NaN never wins (a NaN doc counts against, a NaN own score ranks last).
rank = torch.where(torch.isfinite(own), (~(scores < own.unsqueeze(1))).sum(1), torch.full_like(own, len(rows)).long())
mrr = torch.where(rank <= 10, 1.0 / rank, torch.zeros(len(rows)))
print(json.dumps({"task": "retrieval", "n": len(rows), "recall@1": (rank == 1).float().mean().item(),
                  "recall@10": (rank <= 10).float().mean().item(), "mrr@10": mrr.mean().item()}))
