#!/usr/bin/env python3
"""Times one ONNX Runtime model on real BBC test texts; prints one JSON line.

Inputs are BBC test texts (the `text` field) tokenized with the model folder's tokenizer to
exactly T tokens: the texts with at least T tokens are truncated to T (no padding, so the
attention mask is all ones when there are such texts; shorter texts are padded only if none
is long enough), taken in file order and repeated to fill the batch of B. The session
runs sequentially with intra_op_num_threads=N, inter_op_num_threads=1 and ORT_ENABLE_ALL.

    bench/.venv/bin/python bench/ort_time.py --model bench/work/ort/fp32.onnx --batch 1 --seq 128 \
        --threads 1 --runs 50 --warmup 5

stdout: {"runs_ms": [...], "median_ms": x, "p90_ms": y, ...} (also load_ms, peak_rss_mb, file_mb,
inputs; peak RSS is the whole Python process: interpreter, numpy, tokenizers and ORT).
"""
import argparse
import json
import resource
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

DEFAULT_TOKENIZER = "assets/models/all-MiniLM-L6-v2/tokenizer.json"
DEFAULT_DATA = "assets/data/bbc/test.jsonl"


def load_texts(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line)["text"] for line in f if line.strip()]


def bench_inputs(tokenizer_path, data_path, b, t):
    """(input_ids, attention_mask, token_type_ids), each int64 [B, T], from real BBC test texts."""
    tok = Tokenizer.from_file(str(tokenizer_path))
    tok.no_padding()
    tok.no_truncation()
    texts = load_texts(data_path)
    lengths = [len(e.ids) for e in tok.encode_batch(texts)]
    long_enough = [x for x, n in zip(texts, lengths) if n >= t]
    chosen = long_enough or texts  # every BBC test text has >= 162 tokens, so this is rare
    batch = [chosen[i % len(chosen)] for i in range(b)]
    tok.enable_truncation(max_length=t)
    pad_id = tok.token_to_id("[PAD]")
    tok.enable_padding(length=t, pad_id=0 if pad_id is None else pad_id, pad_token="[PAD]")
    enc = tok.encode_batch(batch)
    ids = np.array([e.ids for e in enc], dtype=np.int64)
    mask = np.array([e.attention_mask for e in enc], dtype=np.int64)
    types = np.array([e.type_ids for e in enc], dtype=np.int64)
    assert ids.shape == (b, t), ids.shape
    return ids, mask, types


def make_session(model, threads):
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(model), sess_options=so, providers=["CPUExecutionProvider"])


def feeds_for(session, ids, mask, types):
    """Only the inputs the model declares (exports may or may not take token_type_ids)."""
    by_name = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
    names = [i.name for i in session.get_inputs()]
    missing = [n for n in names if n not in by_name]
    if missing:
        raise SystemExit(f"model wants inputs {missing} this script does not know")
    return {n: by_name[n] for n in names}


def time_runs(session, feeds, runs, warmup):
    for _ in range(warmup):
        session.run(None, feeds)
    ms = []
    for _ in range(runs):
        start = time.perf_counter()
        session.run(None, feeds)
        ms.append((time.perf_counter() - start) * 1e3)
    return ms


def model_file_mb(model):
    """The .onnx file plus its external-data file `<name>.data` if there is one (ort_models.py writes none)."""
    data = Path(str(model) + ".data")
    return (Path(model).stat().st_size + (data.stat().st_size if data.exists() else 0)) / 2**20


def p90(ms):
    return statistics.quantiles(ms, n=10, method="inclusive")[8] if len(ms) > 1 else ms[0]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help=".onnx file")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--threads", type=int, default=1, help="intra_op_num_threads")
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--tokenizer", default=DEFAULT_TOKENIZER, help="tokenizer.json of the model folder")
    ap.add_argument("--data", default=DEFAULT_DATA, help="BBC JSONL with a text field")
    args = ap.parse_args()
    if args.runs < 1 or args.batch < 1 or args.seq < 2:
        sys.exit("--runs, --batch must be >= 1 and --seq >= 2")

    ids, mask, types = bench_inputs(args.tokenizer, args.data, args.batch, args.seq)
    start = time.perf_counter()
    session = make_session(args.model, args.threads)
    load_ms = (time.perf_counter() - start) * 1e3
    feeds = feeds_for(session, ids, mask, types)
    ms = time_runs(session, feeds, args.runs, args.warmup)
    out = {
        "runs_ms": [round(x, 4) for x in ms],
        "median_ms": statistics.median(ms),
        "p90_ms": p90(ms),
        "seqs_per_s": args.batch * 1e3 / statistics.median(ms),
        "load_ms": load_ms,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,  # KiB on Linux
        "file_mb": model_file_mb(args.model),
        "inputs": list(feeds),
        "padded_tokens": int(mask.size - mask.sum()),
        "onnxruntime": ort.__version__,
    }
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
