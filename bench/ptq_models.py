#!/usr/bin/env python3
"""Builds the ONNX Runtime post-training-quantization peers for bench/ptq_compare.py in bench/work/ptq/.

For each model of MODELS (the two fine-tuned BBC classifiers and the base MiniLM):
    fp32.onnx          torch.onnx.export (TorchScript exporter, eager attention) of transformers' BertModel with
                       the folder's weights + masked mean pooling (+ shrink's Linear head for a classifier);
                       inputs input_ids, attention_mask, token_type_ids; output logits [B, L] or the mean-pooled
                       (not normalised) sentence_embedding [B, C]; dynamic batch and sequence axes
    fp32-pre.onnx      quant_pre_process(fp32.onnx): symbolic shape inference + ORT basic optimisation, which
                       the ORT quantization guide asks for before quantizing
    int8-dynamic.onnx  quantize_dynamic(per_channel=True, weight_type=QInt8)
    qdq-*.onnx         quantize_static(QDQ, per_channel=True, weights QInt8, activations QUInt8,
                       reduce_range=False), CalibrationMethod and op types per ORT_STATIC (MinMax, Entropy,
                       Percentile on every op type ORT quantizes by default; MinMax on MatMul only), calibrated on
                       calib.jsonl at the model's max_len, other options at ORT's defaults
and once, for both sides: calib.jsonl, CALIB_ROWS rows of train.jsonl drawn with CALIB_SEED (all fields, file order).

The exported fp32 graph is checked against PyTorch (max |diff| on a padded batch of 4 texts) and PyTorch's fp32
outputs over the test set are kept as the reference: test accuracy for a classifier, the L2-normalised
embeddings of the test bodies (torch_fp32_bodies.npy) for the base model. Checks go to <model>/manifest.json.
Idempotent: what exists is reused (--force rebuilds). Nothing is downloaded.

    bench/.venv/bin/python bench/ptq_models.py [--force] [--models classifier-128,base]
"""
import argparse
import datetime
import json
import logging
import os
import random
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

WORK = Path("bench/work/ptq")
TRAIN = Path("assets/data/bbc/train.jsonl")
TEST = Path("assets/data/bbc/test.jsonl")
CALIB_ROWS, CALIB_SEED = 256, 0
# name -> (folder, task). max_len comes from the folder's config.json (`shrink.max_len`), else 128.
MODELS = {
    "classifier-128": ("out/bbc-classifier-128", "classify"),
    "classifier-32": ("out/bbc-classifier-32", "classify"),
    "base": ("assets/models/all-MiniLM-L6-v2", "retrieval"),
}
# The quantize_static variants, file stem -> (CalibrationMethod, op_types_to_quantize). None = ORT's default, every
# op type it can quantize (Add, LayerNormalization, Softmax, Erf's neighbours, ... get QDQ pairs too); MatMul
# only is closer to quantizing just the Linears (and the two attention products).
ORT_STATIC = {
    "qdq-minmax": ("MinMax", None),
    "qdq-entropy": ("Entropy", None),
    "qdq-percentile": ("Percentile", None),
    "qdq-minmax-matmul": ("MinMax", ["MatMul"]),
}
# ORT's guidance for x86 with VNNI (this machine has avx512_vnni; see quantize_static's docstring):
# u8 activations, s8 weights, no reduce_range.
STATIC_TYPES = {"activation_type": "QUInt8", "weight_type": "QInt8", "reduce_range": False}
CALIB_STRIDE = 32  # texts per calibration pass: ORT keeps every intermediate output of a pass in memory
OPSET = 17


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def tmp_path(path):
    return path.with_name(f".{path.stem}.tmp{path.suffix}")


def read_jsonl(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def model_info(name):
    folder, task = MODELS[name]
    cfg = json.loads((Path(folder) / "config.json").read_text())
    max_len = (cfg.get("shrink") or {}).get("max_len") or 128
    labels = [cfg["id2label"][str(i)] for i in range(len(cfg["id2label"]))] if task == "classify" else None
    return {"name": name, "folder": folder, "task": task, "max_len": max_len, "labels": labels}


def ort_paths(name):
    d = WORK / name
    paths = {"fp32": d / "fp32.onnx", "int8-dynamic": d / "int8-dynamic.onnx"}
    paths.update({k: d / f"{k}.onnx" for k in ORT_STATIC})
    return paths


def write_calib(force=False):
    """CALIB_ROWS rows of train.jsonl, seeded; rewritten only when its content would change."""
    lines = [line for line in TRAIN.read_text(encoding="utf-8").splitlines() if line.strip()]
    pick = sorted(random.Random(CALIB_SEED).sample(range(len(lines)), CALIB_ROWS))
    text = "".join(lines[i] + "\n" for i in pick)
    path = WORK / "calib.jsonl"
    if force or not path.exists() or path.read_text(encoding="utf-8") != text:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp_path(path).write_text(text, encoding="utf-8")
        os.replace(tmp_path(path), path)
        log(f"wrote {path} ({CALIB_ROWS} rows of {TRAIN}, seed {CALIB_SEED})")
    return path


def tokenizer(folder, max_len):
    """The folder's tokenizer.json, truncating to max_len (special tokens included), padding to the longest."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(Path(folder) / "tokenizer.json"))
    tok.enable_truncation(max_length=max_len)
    tok.enable_padding(pad_id=tok.token_to_id("[PAD]") or 0, pad_token="[PAD]")
    return tok


def encode(tok, texts):
    import numpy as np

    enc = tok.encode_batch(texts)
    return {"input_ids": np.array([e.ids for e in enc], dtype=np.int64),
            "attention_mask": np.array([e.attention_mask for e in enc], dtype=np.int64),
            "token_type_ids": np.array([e.type_ids for e in enc], dtype=np.int64)}


def torch_model(info):
    """transformers BertModel with the folder's weights, masked mean pooling, shrink's head if any."""
    import torch
    from safetensors.torch import load_file
    from transformers import BertConfig, BertModel

    cfg = BertConfig.from_pretrained(info["folder"])
    cfg._attn_implementation = "eager"  # the graph ORT's quantizer and fusions know
    bert = BertModel(cfg, add_pooling_layer=False).eval()
    sd = load_file(str(Path(info["folder"]) / "model.safetensors"))
    head = {k.split(".", 1)[1]: sd.pop(k) for k in list(sd) if k.startswith("classifier.")}
    for k in [k for k in sd if k.startswith("pooler.") or k == "embeddings.position_ids"]:
        del sd[k]  # the [CLS] pooler is unused by mean pooling; position_ids is a buffer
    missing, unexpected = bert.load_state_dict(sd, strict=False)
    missing = [k for k in missing if not k.endswith("position_ids")]
    if missing or unexpected:
        raise SystemExit(f"{info['folder']}: missing {missing}, unexpected {unexpected} weights")
    if (info["task"] == "classify") != bool(head):
        raise SystemExit(f"{info['folder']}: task {info['task']} but classifier weights {sorted(head)}")

    class Pooled(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.bert = bert
            self.head = None
            if head:
                self.head = torch.nn.Linear(head["weight"].shape[1], head["weight"].shape[0])
                self.head.load_state_dict(head)

        def forward(self, input_ids, attention_mask, token_type_ids):
            h = self.bert(input_ids=input_ids, attention_mask=attention_mask,
                          token_type_ids=token_type_ids).last_hidden_state  # [B, T, C]
            m = attention_mask.unsqueeze(-1).to(h.dtype)  # [B, T, 1]
            pooled = (h * m).sum(1) / m.sum(1).clamp(min=1e-9)  # [B, C]
            return pooled if self.head is None else self.head(pooled)  # [B, C] or [B, L]

    return Pooled().eval()


def output_name(info):
    return "logits" if info["task"] == "classify" else "sentence_embedding"


def export(info, model, path):
    import warnings

    import torch

    names = ["input_ids", "attention_mask", "token_type_ids"]
    ids = torch.tensor([[101] + [2000 + i for i in range(14)] + [102]] * 2)
    example = (ids, torch.ones_like(ids), torch.zeros_like(ids))
    out = output_name(info)
    axes = {n: {0: "batch", 1: "sequence"} for n in names} | {out: {0: "batch"}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # exporter deprecation and tracer notices
        torch.onnx.export(model, example, str(tmp_path(path)), dynamo=False, input_names=names,
                          output_names=[out], dynamic_axes=axes, opset_version=OPSET, do_constant_folding=True)
    os.replace(tmp_path(path), path)


def check_export(info, model, path):
    """Max |ORT - torch| on a padded batch; PyTorch's fp32 reference over the test set."""
    import numpy as np
    import onnxruntime as ort
    import torch

    tok = tokenizer(info["folder"], info["max_len"])
    rows = read_jsonl(TEST)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    # 4 texts cut to different lengths, so the batch is padded and the mask matters.
    sample = encode(tok, [" ".join(r["text"].split()[:n]) for r, n in zip(rows, (5, 12, 40, 10_000))])
    with torch.inference_mode():
        ref = model(*(torch.from_numpy(sample[k]) for k in ("input_ids", "attention_mask", "token_type_ids")))
        got = sess.run(None, sample)[0]
        check = {"max_abs_diff": float(np.abs(got - ref.numpy()).max()),
                 "output_max_abs": float(np.abs(ref.numpy()).max())}

        def run_torch(texts):
            outs = []
            for i in range(0, len(texts), 32):
                f = encode(tok, texts[i:i + 32])
                outs.append(model(*(torch.from_numpy(f[k]) for k in
                                    ("input_ids", "attention_mask", "token_type_ids"))).numpy())
            return np.concatenate(outs)

        t0 = time.perf_counter()
        if info["task"] == "classify":
            pred = run_torch([r["text"] for r in rows]).argmax(1)
            gold = np.array([info["labels"].index(r["label"]) for r in rows])
            check["torch_fp32_accuracy"] = float((pred == gold).mean())
        else:
            emb = run_torch([r["body"] for r in rows])
            emb /= np.linalg.norm(emb, axis=1, keepdims=True)
            np.save(WORK / info["name"] / "torch_fp32_bodies.npy", emb.astype(np.float32))
        log(f"{info['name']}: torch fp32 reference over {len(rows)} test rows in {time.perf_counter() - t0:.0f} s")
    log(f"{info['name']}: fp32.onnx vs torch: max |diff| {check['max_abs_diff']:.2e} "
        f"(outputs up to {check['output_max_abs']:.1f})"
        + (f", torch fp32 accuracy {check['torch_fp32_accuracy']:.4f}" if "torch_fp32_accuracy" in check else ""))
    return check


class CalibReader:
    """calib.jsonl texts one at a time (batch 1, truncated to max_len, no padding), as ORT's calibrators want;
    set_range lets quantize_static (CalibStridedMinMax) calibrate in strides of CALIB_STRIDE texts."""

    def __init__(self, info, calib_path):
        tok = tokenizer(info["folder"], info["max_len"])
        tok.no_padding()
        self.feeds = [encode(tok, [r["text"]]) for r in read_jsonl(calib_path)]
        self.set_range(0, len(self.feeds))

    def __len__(self):
        return len(self.feeds)

    def set_range(self, start_index, end_index):
        self.it = iter(self.feeds[start_index:end_index])

    def get_next(self):
        return next(self.it, None)


def quietly(fn):
    """ORT's quantizer logs at WARNING on the root logger (pre-processing advice, per-tensor notes)."""
    level = logging.getLogger().level
    logging.getLogger().setLevel(logging.ERROR)
    try:
        fn()
    finally:
        logging.getLogger().setLevel(level)


def quant_dynamic(src, path):
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quietly(lambda: quantize_dynamic(str(src), str(tmp_path(path)), per_channel=True, weight_type=QuantType.QInt8))
    os.replace(tmp_path(path), path)


def quant_static(info, src, path, method, op_types, calib_path):
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    quietly(lambda: quantize_static(
        str(src), str(tmp_path(path)), CalibReader(info, calib_path), quant_format=QuantFormat.QDQ,
        per_channel=True, reduce_range=STATIC_TYPES["reduce_range"],
        activation_type=getattr(QuantType, STATIC_TYPES["activation_type"]),
        weight_type=getattr(QuantType, STATIC_TYPES["weight_type"]),
        calibrate_method=getattr(CalibrationMethod, method), op_types_to_quantize=op_types,
        extra_options={"CalibStridedMinMax": CALIB_STRIDE}))
    os.replace(tmp_path(path), path)


def pre_process(src, path):
    from onnxruntime.quantization.shape_inference import quant_pre_process

    # auto_merge: without it symbolic shape inference gives up on the attention-mask subgraph of the export.
    quietly(lambda: quant_pre_process(str(src), str(tmp_path(path)), auto_merge=True))
    os.replace(tmp_path(path), path)


def build(name, calib_path, force=False):
    """Builds what is missing for one model; returns its manifest."""
    info = model_info(name)
    d = WORK / name
    d.mkdir(parents=True, exist_ok=True)
    paths = ort_paths(name)
    pre = d / "fp32-pre.onnx"
    manifest_path = d / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() and not force else {}
    # A model folder re-trained since the export (or a new export) invalidates everything built from it.
    src_mtime = (Path(info["folder"]) / "model.safetensors").stat().st_mtime
    calib_mtime = calib_path.stat().st_mtime
    if force or manifest.get("source_mtime") != src_mtime or not paths["fp32"].exists():
        for p in [*paths.values(), pre]:
            p.unlink(missing_ok=True)
        manifest = {}
    if manifest.get("calib_mtime") != calib_mtime:
        for p in paths:
            if p.startswith("qdq-"):
                paths[p].unlink(missing_ok=True)

    model = None
    steps = [("fp32", lambda: export(info, model, paths["fp32"])),
             ("fp32-pre", lambda: pre_process(paths["fp32"], pre)),
             ("int8-dynamic", lambda: quant_dynamic(pre, paths["int8-dynamic"]))]
    steps += [(k, lambda k=k: quant_static(info, pre, paths[k], *ORT_STATIC[k], calib_path)) for k in ORT_STATIC]
    built = {}
    for key, step in steps:
        path = pre if key == "fp32-pre" else paths[key]
        if path.exists():
            continue
        if key == "fp32":
            model = torch_model(info)
        t0 = time.perf_counter()
        step()
        built[key] = round(time.perf_counter() - t0, 1)
        log(f"{name}: built {path} in {built[key]:.0f} s")
    ref_missing = info["task"] == "retrieval" and not (d / "torch_fp32_bodies.npy").exists()
    if "fp32" in built or "check" not in manifest or ref_missing:
        manifest["check"] = check_export(info, model or torch_model(info), paths["fp32"])

    import onnxruntime
    import torch

    manifest.update({
        "model": info, "source_mtime": src_mtime, "calib_mtime": calib_mtime, "opset": OPSET,
        "exporter": "torch.onnx.export(dynamo=False), attn_implementation=eager, masked mean pooling",
        "static": {"format": "QDQ", "per_channel": True, **STATIC_TYPES,
                   "variants": {k: {"method": m, "op_types": o or "ORT default (all)"} for k, (m, o) in ORT_STATIC.items()},
                   "calib": str(calib_path), "calib_rows": CALIB_ROWS, "calib_seed": CALIB_SEED,
                   "calib_stride": CALIB_STRIDE, "pre_process": "quant_pre_process(auto_merge=True)"},
        "dynamic": {"per_channel": True, "weight_type": "QInt8", "pre_process": "quant_pre_process(auto_merge=True)"},
        "versions": {"onnxruntime": onnxruntime.__version__, "torch": torch.__version__},
        "files": {k: str(p) for k, p in paths.items()},
    })
    manifest.setdefault("build_s", {}).update(built)
    if built:
        manifest["date"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    tmp_path(manifest_path).write_text(json.dumps(manifest, indent=2) + "\n")
    os.replace(tmp_path(manifest_path), manifest_path)
    return manifest


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default=",".join(MODELS), help="comma-separated, of: " + ", ".join(MODELS))
    ap.add_argument("--force", action="store_true", help="rebuild everything")
    args = ap.parse_args()
    calib = write_calib(args.force)
    for name in args.models.split(","):
        if name not in MODELS:
            sys.exit(f"unknown model {name!r}; known: {', '.join(MODELS)}")
        build(name, calib, args.force)


if __name__ == "__main__":
    main()
