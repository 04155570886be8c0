#!/usr/bin/env python3
"""Post-training quantization, shrink vs ONNX Runtime, on the same fine-tuned models: accuracy (or embedding
cosine and retrieval), file size and latency in one table per model.

Models (bench/ptq_models.py MODELS): the BBC classifiers fine-tuned at 128 and 32 tokens (accuracy and macro F1 on
test.jsonl at their max_len) and the base all-MiniLM-L6-v2 (mean cosine of the test bodies' embeddings to
PyTorch fp32, and retrieval as `shrink eval --task retrieval` defines it: each title ranks all bodies by cosine,
rank = 1 + other bodies scoring at least its own, ties against the query; recall@1, recall@10, MRR@10; 128 tokens).

  ORT side     the exports and quantize_dynamic / quantize_static (QDQ) models bench/ptq_models.py builds,
               evaluated in this process one text at a time (batch 1: ORT's dynamic quantization takes one
               activation scale per tensor, so padding and batch-mates would change a text's result)
  shrink side  the fp32 folder, and each SHRINK_VARIANTS entry made by `shrink quantize` into
               bench/work/ptq/shrink/<model>/ (reused while the binary, the source and calib.jsonl are unchanged),
               evaluated with `shrink eval` (+ `shrink embed` for the cosine). A variant whose quantize (or eval,
               or bench) fails is reported as "failed: <first line of stderr>", so the table fills in as the CLI
               grows. Static variants get `--calib bench/work/ptq/calib.jsonl --calib-samples 256 --seed 0`: the
               same 256 train rows ORT calibrates on.
  latency      batch 1 x the model's max_len tokens (128, 32 for classifier-32), 1 thread: every variant of a
               model takes turns, a fresh process per side per round (bench/ort_time.py for ORT, `shrink bench`),
               for --rounds rounds; median of all timed runs (as bench/ort_compare.py does)
  size         the weights file: the .onnx, or the folder's model.safetensors (MB = 10^6 bytes)

Writes bench/results/ptq_compare.{json,md} (after every model, so a cut-short run keeps what it measured).

    bench/.venv/bin/python bench/ptq_compare.py --quick                       # smoke run, ~25 min on 2 cores
    bench/.venv/bin/python bench/ptq_compare.py --models classifier-32 --quick
    bench/run-ptq-compare.sh                                                  # venv, models, full run
"""
import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from importlib.metadata import version
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import ptq_models as pm  # noqa: E402
from ort_compare import PAUSE_S, Side, git_info, machine_info, plan, side_result  # noqa: E402

# shrink variants: (name, `shrink quantize MODEL` arguments). "CALIB" expands to the calibration flags; "{best}"
# to the int8-static observer that scored best on this model (accuracy, or cosine for the base model).
SHRINK_VARIANTS = [
    ("int8-dynamic", ["--scheme", "int8-dynamic"]),
    ("int8-dynamic, int8 embeddings", ["--scheme", "int8-dynamic", "--embeddings", "int8"]),
    ("int8-static minmax", ["--scheme", "int8-static", "--observer", "minmax", "CALIB"]),
    ("int8-static percentile", ["--scheme", "int8-static", "--observer", "percentile", "CALIB"]),
    ("int8-static entropy", ["--scheme", "int8-static", "--observer", "entropy", "CALIB"]),
    ("int8-static mse", ["--scheme", "int8-static", "--observer", "mse", "CALIB"]),
    ("int8-static {best}, smooth 0.5", ["--scheme", "int8-static", "--observer", "{best}", "--smooth-alpha", "0.5",
                                        "CALIB"]),
    ("int4 g32, int4 embeddings", ["--scheme", "int4", "--group", "32", "--embeddings", "int4"]),
    ("int4 g32 gptq, int4 embeddings", ["--scheme", "int4", "--group", "32", "--gptq", "--embeddings", "int4",
                                        "CALIB"]),
    ("fp16", ["--scheme", "fp16"]),
]
# ORT rows: file key in bench/ptq_models.py -> label.
ORT_LABELS = {"fp32": "fp32", "int8-dynamic": "quantize_dynamic int8 per-channel",
              "qdq-minmax": "quantize_static QDQ MinMax", "qdq-entropy": "quantize_static QDQ Entropy",
              "qdq-percentile": "quantize_static QDQ Percentile",
              "qdq-minmax-matmul": "quantize_static QDQ MinMax, MatMul only"}
SHRINK = "target/release/shrink"
RESULTS = Path("bench/results")
BUILDS_SEEN = []  # mtimes of the shrink binary seen during the run


def binary_build(path):
    """The binary's mtime, noted on every use: a rebuild during the run would mix builds in one table."""
    ts = datetime.datetime.fromtimestamp(Path(path).stat().st_mtime, datetime.timezone.utc).isoformat(
        timespec="seconds")
    if ts not in BUILDS_SEEN:
        BUILDS_SEEN.append(ts)
    return ts


def log(msg):
    print(msg, file=sys.stderr, flush=True)


class Failed(Exception):
    """A step of one variant failed; the message is what the table shows."""


def run(cmd, what):
    p = subprocess.run([str(c) for c in cmd], capture_output=True, text=True)
    if p.returncode != 0:
        first = next((line.strip() for line in p.stderr.splitlines() if line.strip()), f"exit {p.returncode}")
        raise Failed(f"{what}: {first}")
    return p.stdout


def last_json(stdout, what):
    for line in reversed(stdout.strip().splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    raise Failed(f"{what}: no JSON on stdout")


# ---- metrics, defined as crates/shrink-eval/src/task.rs defines them ----

def classify_metrics(labels, gold, pred):
    k = len(labels)
    conf = np.zeros((k, k), dtype=np.int64)
    np.add.at(conf, (gold, pred), 1)
    denom = conf.sum(0) + conf.sum(1)  # predicted + actual per class
    f1 = np.where(denom > 0, 2 * np.diag(conf) / np.maximum(denom, 1), 0.0)
    return {"accuracy": float(np.trace(conf) / len(gold)), "macro_f1": float(f1.mean()), "n": len(gold)}


def retrieval_metrics(q, d):
    """q[i] is relevant to d[i] only; both L2-normalised."""
    s = q @ d.T
    own = np.diag(s)
    # As `shrink eval`: ties count against the query, its own body included in the count; NaN never wins.
    rank = np.where(np.isfinite(own), (~(s < own[:, None])).sum(1), len(q))
    mrr = np.where(rank <= 10, 1.0 / rank, 0.0)
    return {"recall@1": float((rank == 1).mean()), "recall@10": float((rank <= 10).mean()),
            "mrr@10": float(mrr.mean()), "n": len(q)}


def normalise(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def cosine(emb, ref):
    c = (normalise(emb) * ref).sum(1)
    return {"cosine_mean": float(c.mean()), "cosine_min": float(c.min())}


# ---- the two sides ----

def ort_eval(info, path, ref, threads):
    from ort_time import make_session

    sess = make_session(path, threads)
    tok = pm.tokenizer(info["folder"], info["max_len"])
    tok.no_padding()

    def outputs(texts):  # [N, L] logits or [N, C] pooled embeddings
        return np.concatenate([sess.run(None, pm.encode(tok, [t]))[0] for t in texts])

    rows = pm.read_jsonl(pm.TEST)
    if info["task"] == "classify":
        gold = np.array([info["labels"].index(r["label"]) for r in rows])
        return classify_metrics(info["labels"], gold, outputs([r["text"] for r in rows]).argmax(1))
    docs = normalise(outputs([r["body"] for r in rows]))
    return retrieval_metrics(normalise(outputs([r["title"] for r in rows])), docs) | cosine(docs, ref)


def shrink_eval(binary, info, folder, ref, threads, work):
    common = ["--data", pm.TEST, "--max-len", info["max_len"], "--json"]
    out = last_json(run([binary, "--threads", threads, "eval", folder, "--task", info["task"], *common], "eval"),
                    "eval")
    if info["task"] == "classify":
        return {k: out[k] for k in ("accuracy", "macro_f1", "n")}
    npy = work / "bodies.npy"
    run([binary, "--threads", threads, "embed", folder, "--input", pm.TEST, "--text-field", "body",
         "--output", npy, "--max-len", info["max_len"]], "embed")
    return {k: out[k] for k in ("recall@1", "recall@10", "mrr@10", "n")} | cosine(np.load(npy), ref)


def expand(args, calib, best):
    out = []
    for a in args:
        if a == "CALIB":
            out += ["--calib", str(calib), "--calib-samples", str(pm.CALIB_ROWS), "--seed", str(pm.CALIB_SEED)]
        else:
            out.append(a.replace("{best}", best or ""))
    return out


def slug(name):
    return "".join(c if c.isalnum() or c in ".-" else "_" for c in name).strip("_")


def shrink_quantize(binary, info, name, qargs, calib, force):
    """The variant's folder, reused while its command, the binary, the source and calib.jsonl are the same."""
    out = pm.WORK / "shrink" / info["name"] / slug(name)
    stamp_path = out.with_name(out.name + ".stamp.json")
    cmd = [binary, "quantize", info["folder"], *qargs, "--out", out]
    stamp = {"cmd": [str(c) for c in cmd], "binary_mtime": Path(binary).stat().st_mtime,
             "source_mtime": (Path(info["folder"]) / "model.safetensors").stat().st_mtime,
             "calib_mtime": Path(calib).stat().st_mtime}
    if (not force and out.is_dir() and stamp_path.exists()
            and json.loads(stamp_path.read_text()) == stamp):
        return out, cmd, 0.0
    stamp_path.unlink(missing_ok=True)
    subprocess.run(["rm", "-rf", str(out)], check=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    run(cmd, "quantize")
    stamp_path.write_text(json.dumps(stamp) + "\n")
    return out, cmd, time.perf_counter() - t0


def primary(info, metrics):
    return metrics.get("accuracy" if info["task"] == "classify" else "cosine_mean", -1.0)


def shrink_rows(args, info, ref, calib):
    work = pm.WORK / "shrink" / info["name"]
    work.mkdir(parents=True, exist_ok=True)
    rows = [{"side": "shrink", "variant": "fp32", "folder": info["folder"], "status": "ok",
             "build": binary_build(args.shrink)}]
    try:
        rows[0]["metrics"] = shrink_eval(args.shrink, info, info["folder"], ref, args.eval_threads, work)
    except Failed as e:
        rows[0]["status"] = f"failed: {e}"
    for name, qargs in SHRINK_VARIANTS:
        best = None
        if "{best}" in " ".join(qargs):
            statics = [r for r in rows if r["status"] == "ok" and r.get("observer") and not r.get("smooth")]
            if not statics:
                rows.append({"side": "shrink", "variant": name.replace("{best}", "(best observer)"),
                             "status": "skipped: no int8-static variant succeeded"})
                continue
            best = max(statics, key=lambda r: primary(info, r["metrics"]))["observer"]  # first of equals
            name = name.replace("{best}", best)
        q = expand(qargs, calib, best)
        row = {"side": "shrink", "variant": name, "args": q, "status": "ok", "build": binary_build(args.shrink)}
        if "--observer" in q and q[q.index("--scheme") + 1] == "int8-static":
            row["observer"] = q[q.index("--observer") + 1]
            row["smooth"] = "--smooth-alpha" in q
        try:
            folder, cmd, secs = shrink_quantize(args.shrink, info, name, q, calib, args.force)
            row.update(folder=str(folder), quantize_cmd=" ".join(map(str, cmd)), quantize_s=round(secs, 1))
            row["metrics"] = shrink_eval(args.shrink, info, folder, ref, args.eval_threads, work)
        except Failed as e:
            row["status"] = f"failed: {e}"
        log(f"{info['name']}: shrink {name}: {row['status']} {row.get('metrics', '')}")
        rows.append(row)
    return rows


def ort_rows(args, info, ref):
    rows = []
    for key, path in pm.ort_paths(info["name"]).items():
        t0 = time.perf_counter()
        m = ort_eval(info, path, ref, args.eval_threads)
        rows.append({"side": "ORT", "variant": ORT_LABELS.get(key, key), "key": key, "file": str(path),
                     "status": "ok", "metrics": m, "eval_s": round(time.perf_counter() - t0, 1)})
        log(f"{info['name']}: ORT {key}: {m}")
    return rows


def weights_file(row):
    return Path(row["file"]) if row["side"] == "ORT" else Path(row["folder"]) / "model.safetensors"


def time_rows(args, info, rows):
    """Interleaved latency of every ok row: per round, each side once, a fresh process each."""
    seq = info["max_len"]
    sides = {}
    for i, r in enumerate(rows):
        if r["status"] != "ok":
            continue
        if r["side"] == "ORT":
            cmd = [sys.executable, str(Path(__file__).with_name("ort_time.py")), "--model", r["file"],
                   "--threads", "1", "--tokenizer", str(Path(info["folder"]) / "tokenizer.json")]
            sides[i] = Side(f"ORT {r['variant']}", cmd)
        else:
            env = dict(os.environ, RAYON_NUM_THREADS="1")
            sides[i] = Side(f"shrink {r['variant']}", [args.shrink, "--threads", "1", "bench", r["folder"], "--json"],
                            env)
    plans, outs = {}, {i: [] for i in sides}

    def attempt(i, runs, warmup):
        """One call of side i; a failure (run_json exits) drops the side and says why in its row."""
        try:
            return sides[i].run(1, seq, runs, warmup)
        except SystemExit as e:
            rows[i]["status"] = f"failed: bench: {str(e).splitlines()[0]}"
            del sides[i]
        finally:
            time.sleep(PAUSE_S)  # lets the last side's worker threads go to sleep

    for i in list(sides):  # calibration run: sizes the rounds, warms the page cache
        if out := attempt(i, 3, 1):
            plans[i] = plan(statistics.median(out["runs_ms"]), args.round_s, None, None)
    for k in range(args.rounds):
        binary_build(args.shrink)
        for i in list(sides):
            if out := attempt(i, *plans[i]):
                outs[i].append(out)
        log(f"{info['name']}: latency round {k + 1}/{args.rounds} done")
    for i, side in sides.items():
        res = side_result(side, 1, outs[i])
        rows[i]["latency"] = {k: res[k] for k in ("median_ms", "p90_ms", "min_ms", "n", "round_medians_ms",
                                                  "peak_rss_mb") if k in res} | {"batch": 1, "seq": seq,
                                                                                 "threads": 1}


# ---- output ----

def f(x, fmt="{:.4f}"):
    return "–" if x is None else fmt.format(x)


def table(model):
    info, rows = model["info"], model["rows"]
    classify = info["task"] == "classify"
    refs = {r["side"]: r["metrics"] for r in rows if r["variant"] == "fp32" and "metrics" in r}  # Δ: own side's fp32
    seq = info["max_len"]
    if classify:
        head = ["side", "variant", "accuracy", "Δ vs own fp32 (pp)", "macro F1", "size MB", f"ms 1×{seq}", "notes"]
    else:
        head = ["side", "variant", "cosine to fp32 (mean / min)", "recall@1", "recall@10", "MRR@10", "size MB",
                f"ms 1×{seq}", "notes"]
    md = ["| " + " | ".join(head) + " |", "|" + "|".join([" --- "] * 2 + [" ---: "] * (len(head) - 3) + [" --- "])
          + "|"]
    for r in rows:
        m = r.get("metrics", {})
        size = f(r.get("size_mb"), "{:.1f}")
        lat = f(r.get("latency", {}).get("median_ms"), "{:.1f}")
        note = "" if r["status"] == "ok" else r["status"].replace("|", "\\|")
        if classify:
            ref = refs.get(r["side"], {})
            delta = None if "accuracy" not in m or "accuracy" not in ref else 100 * (m["accuracy"] - ref["accuracy"])
            cells = [f(m.get("accuracy"), "{:.2%}"), f(delta, "{:+.2f}"), f(m.get("macro_f1"))]
        else:
            cos = "–" if "cosine_mean" not in m else f"{m['cosine_mean']:.4f} / {m['cosine_min']:.4f}"
            cells = [cos, f(m.get("recall@1"), "{:.3f}"), f(m.get("recall@10"), "{:.3f}"), f(m.get("mrr@10"), "{:.3f}")]
        md.append("| " + " | ".join([r["side"], r["variant"], *cells, size, lat, note]) + " |")
    return md


def write_outputs(report):
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "ptq_compare.json").write_text(json.dumps(report, indent=2) + "\n")
    m, s = report["machine"], report["settings"]
    md = [f"# Post-training quantization: shrink vs ONNX Runtime {report['versions']['onnxruntime']}", "",
          f"{report['date']}; {m['cpu']}, {m['nproc']} cores ({', '.join(m['isa'])}); shrink binary built "
          f"{', '.join(report['shrink']['builds_seen'])}, git {str(report['git']['commit'])[:10]}"
          f"{' (dirty)' if report['git']['dirty'] else ''}; load average {report['loadavg_start'][0]:.2f} at start, "
          f"{report['loadavg_end'][0]:.2f} at end.", ""]
    if report["partial"]:
        md += ["**Partial: the run did not finish.**", ""]
    if len(report["shrink"]["builds_seen"]) > 1:
        md += ["**The shrink binary was rebuilt during the run: shrink rows may come from different builds "
               "(each row's `build` in the JSON); rerun for a consistent table.**", ""]
    if s["quick"]:
        md += [f"**--quick: {s['rounds']} latency rounds of ~{s['round_s']} s per side; timings are rough.**", ""]
    md += [
        "Accuracy: BBC test (448 rows) at the classifier's max_len; fp32 rows should match PyTorch "
        "(export check below). Base model: cosine of each test body's embedding to PyTorch fp32 (mean / min over "
        "448), retrieval title → body as `shrink eval --task retrieval` (recall@1, recall@10, MRR@10), 128 tokens. "
        f"ORT runs batch 1, {s['eval_threads']} threads, ORT_ENABLE_ALL; shrink runs `shrink eval` / `shrink embed`. "
        "Size: the weights file (.onnx, or model.safetensors), MB = 10^6 bytes. Latency: median ms, batch 1 × "
        f"max_len tokens, 1 thread, {s['rounds']} interleaved rounds of every variant of the model, a fresh process "
        "per side per round (ORT: bench/ort_time.py; shrink: `shrink bench`).", "",
        "ORT: torch.onnx.export + quant_pre_process(auto_merge=True); quantize_dynamic(per_channel=True, "
        "weight_type=QInt8); quantize_static(QuantFormat.QDQ, per_channel=True, activation_type=QUInt8, "
        "weight_type=QInt8, reduce_range=False: ORT's advice for x86 with VNNI), CalibrationMethod MinMax / Entropy / "
        "Percentile (ORT defaults: percentile 99.999, all op types it can quantize; the `MatMul only` row passes "
        f"op_types_to_quantize=['MatMul']). Calibration: `{s['calib']}`, {s['calib_rows']} rows of train.jsonl "
        f"(seed {s['calib_seed']}), the same file passed to `shrink quantize --calib`.", "",
        "shrink variants, `shrink quantize MODEL ARGS --out DIR` (CALIB = `--calib FILE --calib-samples "
        f"{s['calib_rows']} --seed {s['calib_seed']}`; {{best}} = the int8-static observer that scored best on the "
        "model): " + "; ".join(f"{n}: `{' '.join(a)}`" for n, a in s["shrink_variants"]) + ".", ""]
    for name, model in report["models"].items():
        info = model["info"]
        md += [f"## {name} ({info['folder']}, {info['task']}, max_len {info['max_len']})", ""]
        chk = model.get("export_check", {})
        if chk:
            md += [f"fp32.onnx vs PyTorch: max |diff| {chk['max_abs_diff']:.1e} on a padded batch"
                   + (f"; PyTorch fp32 accuracy {chk['torch_fp32_accuracy']:.2%}" if "torch_fp32_accuracy" in chk
                      else "") + ".", ""]
        md += table(model) + [""]
    (RESULTS / "ptq_compare.md").write_text("\n".join(md) + "\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default=",".join(pm.MODELS), help="comma-separated, of: " + ", ".join(pm.MODELS))
    ap.add_argument("--shrink", default=SHRINK, help="shrink binary (never rebuilt here)")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved latency rounds")
    ap.add_argument("--round-s", type=float, default=1.5, help="seconds of timed runs per side per round")
    ap.add_argument("--eval-threads", type=int, default=2, help="threads for accuracy runs (both sides)")
    ap.add_argument("--quick", action="store_true", help="2 latency rounds of ~0.3 s; everything else as usual")
    ap.add_argument("--force", action="store_true", help="rebuild the ORT models and the shrink variants")
    args = ap.parse_args()
    if args.quick:
        args.rounds, args.round_s = 2, 0.3
    names = args.models.split(",")
    if bad := [n for n in names if n not in pm.MODELS]:
        sys.exit(f"unknown models {bad}; known: {', '.join(pm.MODELS)}")
    if not os.access(args.shrink, os.X_OK):
        sys.exit(f"no shrink binary at {args.shrink}")
    t_start = time.perf_counter()
    binary_build(args.shrink)
    calib = pm.write_calib()

    report = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_info(), "git": git_info(),
        "versions": {p: version(p) for p in ("onnxruntime", "onnx", "torch", "transformers", "numpy")}
                    | {"python": platform.python_version()},
        "shrink": {"binary": args.shrink, "builds_seen": BUILDS_SEEN},
        "settings": {"quick": args.quick, "rounds": args.rounds, "round_s": args.round_s,
                     "eval_threads": args.eval_threads, "calib": str(calib), "calib_rows": pm.CALIB_ROWS,
                     "calib_seed": pm.CALIB_SEED, "ort_static": pm.STATIC_TYPES,
                     "ort_static_variants": {k: {"method": m, "op_types": o} for k, (m, o) in pm.ORT_STATIC.items()},
                     "shrink_variants": SHRINK_VARIANTS},
        "loadavg_start": os.getloadavg(), "loadavg_end": os.getloadavg(), "partial": True, "models": {},
    }
    for name in names:
        t0 = time.perf_counter()
        manifest = pm.build(name, calib, args.force)
        info = manifest["model"]
        ref = np.load(pm.WORK / name / "torch_fp32_bodies.npy") if info["task"] == "retrieval" else None
        rows = ort_rows(args, info, ref) + shrink_rows(args, info, ref, calib)
        for r in rows:
            if r["status"] == "ok":
                r["size_mb"] = weights_file(r).stat().st_size / 1e6
        model = report["models"][name] = {"info": info, "export_check": manifest.get("check", {}),
                                          "ort_build_s": manifest.get("build_s", {}), "rows": rows}
        write_outputs(report)  # accuracy first: latency takes a while
        time_rows(args, info, rows)
        binary_build(args.shrink)
        model["seconds"] = round(time.perf_counter() - t0)
        report["loadavg_end"] = os.getloadavg()
        write_outputs(report)
        log(f"{name}: done in {model['seconds']} s")
    report["partial"] = False
    report["seconds"] = round(time.perf_counter() - t_start)
    write_outputs(report)
    print("\n".join(Path(RESULTS / "ptq_compare.md").read_text().splitlines()))
    print(f"wrote {RESULTS / 'ptq_compare.json'} and {RESULTS / 'ptq_compare.md'} in {report['seconds']} s")


if __name__ == "__main__":
    main()
