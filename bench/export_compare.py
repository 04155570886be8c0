#!/usr/bin/env python3
"""ONNX Runtime on shrink's ONNX exports vs ONNX Runtime on its own models of the same network (issue 17).

Pairs, each timed by bench/ort_time.py in fresh processes, interleaved, ROUNDS rounds, medians:
  fp32: shrink export of all-MiniLM-L6-v2   vs  torch.onnx.export's file (bench/work/ort/fp32.onnx)
  int8: shrink export of its int8-dynamic folder (int8 embeddings) vs ORT quantize_dynamic per-channel
        (bench/work/ort/int8.onnx); the export per token (default, shrink's integers) and per tensor
        (--int8 dynamic-tensor, quantize_dynamic's DynamicQuantizeLinear)
1x128, 1 thread. Then accuracy: mean cosine of each int8 model's mean-pooled embedding to the fp32 export's on
the 448 BBC test bodies (128 tokens). Writes bench/results/export-ort.json.

    bench/.venv/bin/python bench/export_compare.py --shrink-fp32 X.onnx --shrink-int8 Y.onnx
"""
import argparse, json, platform, statistics, subprocess, sys, time
from pathlib import Path

ap = argparse.ArgumentParser()
ap.add_argument("--shrink-fp32", required=True)
ap.add_argument("--shrink-int8", required=True)
ap.add_argument("--shrink-int8-tensor", required=True)
ap.add_argument("--rounds", type=int, default=5)
ap.add_argument("--runs", type=int, default=30)
args = ap.parse_args()
models = {
    "ort-fp32": "bench/work/ort/fp32.onnx",
    "shrink-fp32": args.shrink_fp32,
    "ort-int8": "bench/work/ort/int8.onnx",
    "shrink-int8": args.shrink_int8,
    "shrink-int8-tensor": args.shrink_int8_tensor,
}
times = {k: [] for k in models}
for r in range(args.rounds):
    for name, path in models.items():
        out = subprocess.run([sys.executable, "bench/ort_time.py", "--model", path, "--batch", "1", "--seq", "128",
                              "--threads", "1", "--runs", str(args.runs), "--warmup", "5"], capture_output=True, text=True, check=True)
        times[name].append(json.loads(out.stdout.strip().splitlines()[-1])["median_ms"])
    print(f"round {r + 1}: " + ", ".join(f"{k} {v[-1]:.2f} ms" for k, v in times.items()), file=sys.stderr)
med = {k: statistics.median(v) for k, v in times.items()}
def embeddings(path):
    import numpy as np, onnxruntime as ort
    from tokenizers import Tokenizer
    tok = Tokenizer.from_file("assets/models/all-MiniLM-L6-v2/tokenizer.json")
    tok.enable_truncation(128)
    s = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    names = [i.name for i in s.get_inputs()]
    out = []
    for line in open("assets/data/bbc/test.jsonl"):
        ids = np.array([tok.encode(json.loads(line)["text"]).ids], dtype=np.int64)
        feed = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
        r = s.run(None, {k: v for k, v in feed.items() if k in names})[0][0]
        e = r.mean(0) if r.ndim == 2 else r  # torch's file gives hidden states: mean over the (unpadded) tokens
        out.append(e / np.linalg.norm(e))
    return np.array(out)


ref = embeddings(models["shrink-fp32"])
cosine = {k: float((embeddings(models[k]) * ref).sum(1).mean()) for k in ("ort-int8", "shrink-int8", "shrink-int8-tensor")}
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.processor())
res = {
    "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "cpu": cpu, "case": "1x128, 1 thread",
    "rounds": args.rounds, "mean_cosine_to_fp32_bbc_test": cosine, "median_ms": med, "rounds_ms": times,
    "ratio_fp32": med["shrink-fp32"] / med["ort-fp32"], "ratio_int8": med["shrink-int8"] / med["ort-int8"],
    "ratio_int8_tensor": med["shrink-int8-tensor"] / med["ort-int8"],
    "file_mb": {k: Path(p).stat().st_size / 1e6 for k, p in models.items()},
}
Path("bench/results").mkdir(parents=True, exist_ok=True)
Path("bench/results/export-ort.json").write_text(json.dumps(res, indent=2) + "\n")
print(json.dumps({k: res[k] for k in ("cpu", "median_ms", "ratio_fp32", "ratio_int8", "ratio_int8_tensor", "mean_cosine_to_fp32_bbc_test", "file_mb")}, indent=2))
