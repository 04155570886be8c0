#!/usr/bin/env python3
"""Times shrink against ONNX Runtime on all-MiniLM-L6-v2 (forward, last_hidden_state), interleaved.

Every side is a fresh process per round that loads its model, does W untimed runs and R timed
runs and prints JSON:
  shrink    target/release/shrink --threads N bench MODEL_DIR --batch B --seq T --runs R --warmup W --json
            (MODEL_DIR: the HF folder for fp32; bench/work/shrink-int8, made by
            `shrink quantize ... --scheme int8-dynamic`, for int8)
  ORT plain bench/ort_time.py --model bench/work/ort/{fp32,int8}.onnx ...
  ORT fused bench/ort_time.py --model bench/work/ort/fused-{fp32,int8}.onnx ...
(the ORT models come from bench/ort_models.py). For each precision, thread count and case the
sides take turns - shrink, ORT plain, ORT fused - for K rounds, so drift in machine load hits all
alike. A first short call per side calibrates R so that a side's round takes about --round-s
seconds. All timed runs of all rounds are pooled per side; the median is the number. The ratio is
shrink's median over the better ORT variant's. The paired ratio, reported beside it, is the median over rounds of
shrink's round median over the better variant's in the same round. Writes <out-dir>/ort_compare.{json,md}.

    bench/.venv/bin/python bench/ort_compare.py                   # full run (~25 min on 2 cores)
    bench/.venv/bin/python bench/ort_compare.py --ort-only --quick  # ORT half only, smoke run
"""
import argparse
import datetime
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from importlib.metadata import version
from pathlib import Path

PAUSE_S = 0.2  # between sides: lets the last side's spinning worker threads go to sleep
ORT_VARIANTS = {"plain": "{p}.onnx", "fused": "fused-{p}.onnx"}
# (precision, batch, seq, threads) -> the largest shrink/ORT ratio that meets the target.
TARGETS = {("fp32", 1, 128, 1): 0.9, ("int8", 1, 128, 1): 0.6, ("int8", 32, 128, 2): 0.7}


def parse_case(name):
    try:
        b, t = (int(x) for x in name.lower().lstrip("b").split("x"))
    except ValueError:
        sys.exit(f"bad case {name!r}: expected BxT, e.g. 1x128")
    return b, t


def last_json(stdout):
    """The last stdout line that is a JSON object (tolerates log lines before it)."""
    for line in reversed(stdout.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                pass
    # Maybe a pretty-printed object spanning lines.
    start = stdout.find("{")
    return json.loads(stdout[start:]) if start >= 0 else None


def run_json(cmd, env=None, what=""):
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr)
        raise SystemExit(f"{what} failed ({proc.returncode}): {' '.join(map(str, cmd))}")
    try:
        out = last_json(proc.stdout)
    except json.JSONDecodeError:
        out = None
    if not isinstance(out, dict) or not isinstance(out.get("runs_ms"), list):
        sys.stderr.write(proc.stderr)
        raise SystemExit(f"{what}: no JSON object with runs_ms on stdout of {' '.join(map(str, cmd))}:\n"
                         f"{proc.stdout[-2000:]}")
    return out


class Side:
    """One contender in one (precision, threads, case): a command run once per round."""

    def __init__(self, name, cmd, env=None):
        self.name, self.cmd, self.env = name, cmd, env
        self.calls = []  # every JSON answer, calibration first

    def run(self, b, t, runs, warmup):
        args = ["--batch", str(b), "--seq", str(t), "--runs", str(runs), "--warmup", str(warmup)]
        out = run_json(self.cmd + args, self.env, self.name)
        if len(out["runs_ms"]) != runs:
            print(f"  warning: {self.name} returned {len(out['runs_ms'])} runs for --runs {runs}", file=sys.stderr)
        self.calls.append(out)
        return out


def shrink_side(binary, model_dir, threads):
    env = dict(os.environ, RAYON_NUM_THREADS=str(threads))
    return Side("shrink", [binary, "--threads", str(threads), "bench", str(model_dir), "--json"], env)


def ort_side(variant, model, threads):
    cmd = [sys.executable, str(Path(__file__).with_name("ort_time.py")), "--model", str(model),
           "--threads", str(threads)]
    return Side(f"ort-{variant}", cmd)


def summary(ms):
    q = statistics.quantiles(ms, n=10, method="inclusive") if len(ms) > 1 else ms * 9
    return {"median_ms": statistics.median(ms), "p90_ms": q[8], "min_ms": min(ms), "n": len(ms)}


def side_result(side, b, rounds_out):
    """Pooled runs of the timed rounds (not the calibration call) plus what each call reported."""
    pooled = [x for out in rounds_out for x in out["runs_ms"]]
    res = summary(pooled)
    res["seqs_per_s"] = b * 1e3 / res["median_ms"]
    res["round_medians_ms"] = [round(statistics.median(o["runs_ms"]), 3) for o in rounds_out]
    for key, agg in (("peak_rss_mb", max), ("load_ms", statistics.median), ("file_mb", max)):
        vals = [o[key] for o in rounds_out if isinstance(o.get(key), (int, float))]
        if vals:
            res[key] = agg(vals)
    res["runs_ms"] = [round(x, 4) for x in pooled]
    res["calls"] = [{k: v for k, v in o.items() if k != "runs_ms"} for o in side.calls]
    return res


def plan(est_ms, round_s, runs, warmup):
    """Timed runs per round (about round_s seconds) and warm-up runs (about 0.25 s, 1..10)."""
    r = runs or max(1, min(500, round(round_s * 1e3 / est_ms)))
    w = warmup if warmup is not None else max(1, min(10, math.ceil(250 / est_ms)))
    return r, w


def machine_info():
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    cpu = next((l.split(":", 1)[1].strip() for l in cpuinfo.splitlines() if l.startswith("model name")),
               platform.processor())
    flags = next((l.split(":", 1)[1].split() for l in cpuinfo.splitlines() if l.startswith("flags")), [])
    return {"cpu": cpu, "nproc": len(os.sched_getaffinity(0)), "cpu_count": os.cpu_count(),
            "isa": [f for f in ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_int8") if f in flags],
            "platform": platform.platform(), "python": platform.python_version()}


def git_info():
    def git(*a):
        p = subprocess.run(["git", *a], capture_output=True, text=True)
        return p.stdout.strip() if p.returncode == 0 else None
    return {"commit": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}


def ensure_shrink_int8(binary, model_dir, out_dir):
    """Runs `shrink quantize` when the folder is missing or older than the binary (whose format may
    have changed); shrink replaces a folder it wrote in one step (--force), so a failed run leaves the old one."""
    out = Path(out_dir)
    if out.is_dir() and any(out.iterdir()) and out.stat().st_mtime >= Path(binary).stat().st_mtime:
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    cmd = [binary, "quantize", str(model_dir), "--scheme", "int8-dynamic", "--out", str(out), "--force"]
    print(f"making shrink int8 model {out}:", " ".join(cmd), flush=True)
    if subprocess.run(cmd).returncode != 0:
        raise SystemExit(f"`{' '.join(cmd)}` failed; make {out} by hand or pass --precisions fp32")


def fmt(x, digits=1):
    return "–" if x is None else f"{x:.{digits}f}"


def write_outputs(out_dir, report):
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "ort_compare.json").write_text(json.dumps(report, indent=2) + "\n")
    rows, m = report["results"], report["machine"]
    md = [f"# shrink vs ONNX Runtime {report['versions']['onnxruntime']} on all-MiniLM-L6-v2",
          "",
          f"{m['cpu']}, {m['nproc']} cores ({', '.join(m['isa'])}); {report['date']}; "
          f"{report['rounds']} interleaved rounds (shrink, ORT plain, ORT fused), each side a fresh process "
          f"per round; median of all timed runs of all rounds. Forward pass to last_hidden_state on real BBC "
          f"test texts, exactly T tokens. ORT: intra_op threads = N, inter_op 1, sequential, ORT_ENABLE_ALL; "
          f"plain = torch.onnx.export, fused = onnxruntime.transformers optimize_model; int8 = "
          f"quantize_dynamic(per_channel, QInt8). Load average {report['loadavg_start'][0]:.2f} at start, "
          f"{report['loadavg_end'][0]:.2f} at end.",
          ""]
    if report.get("partial"):
        md += ["**Partial: the run did not finish.**", ""]
    if report["ort_only"]:
        md += ["**ORT only (`--ort-only`): no shrink numbers.**", ""]
    ver = report.get("ort_models", {}).get("verify", {})
    if ver:
        md += ["ORT models vs PyTorch fp32 (mean cosine of mean-pooled embeddings over the BBC test texts, "
               "128 tokens): " + ", ".join(f"{k} {v['mean_cosine_vs_torch_fp32']:.4f}" for k, v in ver.items()), ""]

    md += ["## Targets", "", "Ratio: of the pooled medians (this decides met / not met). Paired: the median over rounds of "
           "shrink's round median / the faster ORT variant's in the same round.", "",
           "| target | shrink ms | ORT ms | ratio | paired | limit | |", "| --- | ---: | ---: | ---: | ---: | ---: | --- |"]
    for (p, b, t, n), limit in TARGETS.items():
        r = next((r for r in rows if (r["precision"], r["batch"], r["seq"], r["threads"]) == (p, b, t, n)), None)
        ratio = r and r.get("ratio")
        status = "not measured" if ratio is None else ("**met**" if ratio <= limit else "**not met**")
        md.append(f"| {p} b{b}x{t} {n} thread{'s' * (n > 1)} | {fmt(r and r.get('shrink_ms'))} "
                  f"| {fmt(r and r.get('ort_ms'))} | {fmt(ratio, 2)} | {fmt(r and r.get('paired_ratio'), 2)} | ≤ {limit} "
                  f"| {status} |")
    md.append("")

    for case in dict.fromkeys((r["batch"], r["seq"]) for r in rows):
        b, t = case
        md += [f"## batch {b} × {t} tokens", "",
               "| precision | threads | shrink ms | ORT plain ms | ORT fused ms | best ORT | ratio shrink/ORT | target |",
               "| --- | ---: | ---: | ---: | ---: | --- | ---: | --- |"]
        for r in (r for r in rows if (r["batch"], r["seq"]) == case):
            limit = TARGETS.get((r["precision"], b, t, r["threads"]))
            ratio = r.get("ratio")
            target = "" if limit is None else (f"≤ {limit}: " + ("–" if ratio is None else
                                                                 ("met" if ratio <= limit else "not met")))
            md.append(f"| {r['precision']} | {r['threads']} | {fmt(r.get('shrink_ms'))} "
                      f"| {fmt(r['sides'].get('ort-plain', {}).get('median_ms'))} "
                      f"| {fmt(r['sides'].get('ort-fused', {}).get('median_ms'))} "
                      f"| {r['ort_best']} {fmt(r['ort_ms'])} | {fmt(ratio, 2)} | {target} |")
        md.append("")

    md += ["## Memory and files", "",
           "Peak RSS is per process, the largest over rounds (the ORT side is a Python process: interpreter, "
           "numpy, tokenizers and ORT). File MB: the model as loaded (shrink: as it reports; ORT: the .onnx).", "",
           "| precision | case | threads | shrink peak RSS MB | shrink file MB | shrink load ms | ORT plain RSS MB "
           "| ORT fused RSS MB | ORT plain file MB | ORT fused file MB |",
           "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        s, pl, fu = (r["sides"].get(k, {}) for k in ("shrink", "ort-plain", "ort-fused"))
        md.append(f"| {r['precision']} | b{r['batch']}x{r['seq']} | {r['threads']} | {fmt(s.get('peak_rss_mb'))} "
                  f"| {fmt(s.get('file_mb'))} | {fmt(s.get('load_ms'))} | {fmt(pl.get('peak_rss_mb'))} "
                  f"| {fmt(fu.get('peak_rss_mb'))} | {fmt(pl.get('file_mb'))} | {fmt(fu.get('file_mb'))} |")
    (out_dir / "ort_compare.md").write_text("\n".join(md) + "\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shrink", default="target/release/shrink", help="shrink binary")
    ap.add_argument("--model-dir", default="assets/models/all-MiniLM-L6-v2", help="HF model folder (fp32)")
    ap.add_argument("--shrink-int8", default="bench/work/shrink-int8", help="shrink int8 folder (made if missing)")
    ap.add_argument("--ort-dir", default="bench/work/ort", help="ORT models from bench/ort_models.py")
    ap.add_argument("--cases", default="1x16,1x64,1x128,1x256,32x128", help="comma-separated BxT")
    ap.add_argument("--threads", default="1,2", help="comma-separated thread counts")
    ap.add_argument("--precisions", default="fp32,int8")
    ap.add_argument("--variants", default="plain,fused", help="ORT variants")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds per case")
    ap.add_argument("--round-s", type=float, default=1.5, help="target seconds of timed runs per side per round")
    ap.add_argument("--runs", type=int, help="timed runs per side per round (default: from --round-s)")
    ap.add_argument("--warmup", type=int, help="untimed runs per side per round (default: ~0.25 s, 1..10)")
    ap.add_argument("--ort-only", action="store_true", help="skip shrink (before its bench CLI exists)")
    ap.add_argument("--quick", action="store_true", help="smoke run: 2 rounds of ~0.3 s")
    ap.add_argument("--out-dir", default="bench/results")
    args = ap.parse_args()
    if args.quick:
        args.rounds, args.round_s = 2, 0.3
    cases = [parse_case(c) for c in args.cases.split(",")]
    threads = [int(x) for x in args.threads.split(",")]
    precisions = args.precisions.split(",")
    variants = args.variants.split(",")
    if bad := [p for p in precisions if p not in ("fp32", "int8")] + [v for v in variants if v not in ORT_VARIANTS]:
        sys.exit(f"unknown precision/variant {bad}")

    ort_dir = Path(args.ort_dir)
    ort_models = {(p, v): ort_dir / ORT_VARIANTS[v].format(p=p) for p in precisions for v in variants}
    if missing := [str(m) for m in ort_models.values() if not m.exists()]:
        sys.exit(f"missing ORT models {missing}: run bench/.venv/bin/python bench/ort_models.py")
    shrink_dirs = {"fp32": args.model_dir, "int8": args.shrink_int8}
    if not args.ort_only:
        if not os.access(args.shrink, os.X_OK):
            sys.exit(f"no shrink binary at {args.shrink} (cargo build --release -p shrink-cli), or pass --ort-only")
        if "int8" in precisions:
            ensure_shrink_int8(args.shrink, args.model_dir, args.shrink_int8)
    manifest_path = ort_dir / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}

    report = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_info(), "git": git_info(),
        "versions": {"onnxruntime": version("onnxruntime"), "python": platform.python_version()},
        "loadavg_start": os.getloadavg(), "loadavg_end": None,
        "ort_only": args.ort_only, "partial": True,
        "shrink": None if args.ort_only else {
            "binary": args.shrink, "mtime": datetime.datetime.fromtimestamp(
                Path(args.shrink).stat().st_mtime, datetime.timezone.utc).isoformat(timespec="seconds"),
            "model_dirs": {p: shrink_dirs[p] for p in precisions}},
        "ort_models": {"files": {f"{p}-{v}": str(m) for (p, v), m in ort_models.items()},
                       "inputs": manifest.get("inputs"), "opset": manifest.get("opset"),
                       "verify": manifest.get("verify", {})},
        "rounds": args.rounds, "round_s": args.round_s, "pause_s": PAUSE_S,
        "targets": [{"precision": p, "batch": b, "seq": t, "threads": n, "max_ratio": v}
                    for (p, b, t, n), v in TARGETS.items()],
        "results": [],
    }
    out_dir = Path(args.out_dir)
    for p in precisions:
        for n in threads:
            for b, t in cases:
                sides = [] if args.ort_only else [shrink_side(args.shrink, shrink_dirs[p], n)]
                sides += [ort_side(v, ort_models[(p, v)], n) for v in variants]
                plans = {}
                for side in sides:  # calibration: also warms the page cache for the model file
                    est = statistics.median(side.run(b, t, 3, 1)["runs_ms"])
                    plans[side.name] = plan(est, args.round_s, args.runs, args.warmup)
                    time.sleep(PAUSE_S)
                outs = {s.name: [] for s in sides}
                for _ in range(args.rounds):
                    for side in sides:
                        outs[side.name].append(side.run(b, t, *plans[side.name]))
                        time.sleep(PAUSE_S)
                row = {"precision": p, "threads": n, "batch": b, "seq": t,
                       "plan": {k: {"runs": r, "warmup": w} for k, (r, w) in plans.items()},
                       "sides": {s.name: side_result(s, b, outs[s.name]) for s in sides}}
                ort_meds = {k: v["median_ms"] for k, v in row["sides"].items() if k.startswith("ort-")}
                row["ort_best"] = min(ort_meds, key=ort_meds.get)
                row["ort_ms"] = ort_meds[row["ort_best"]]
                if "shrink" in row["sides"]:
                    row["shrink_ms"] = row["sides"]["shrink"]["median_ms"]
                    row["ratio"] = row["shrink_ms"] / row["ort_ms"]
                    # Paired: each round's shrink median over the faster ORT variant's in that same round, then
                    # the median of those; load that comes and goes between rounds then hits both sides of a pair.
                    rounds = [r["round_medians_ms"] for r in row["sides"].values()]
                    shr = row["sides"]["shrink"]["round_medians_ms"]
                    orts = [v["round_medians_ms"] for k, v in row["sides"].items() if k.startswith("ort-")]
                    if all(len(r) == len(shr) for r in rounds):
                        row["paired_ratio"] = statistics.median(s / min(o[i] for o in orts) for i, s in enumerate(shr))
                report["results"].append(row)
                report["loadavg_end"] = os.getloadavg()
                write_outputs(out_dir, report)  # after every case, so a cut-short run keeps what it measured
                line = "  ".join(f"{k} {v['median_ms']:8.2f}" for k, v in row["sides"].items())
                ratio = f"  ratio {row['ratio']:.2f}" if "ratio" in row else ""
                print(f"{p} b{b}x{t:<4} threads={n}: {line} ms  (best ORT: {row['ort_best']}){ratio}", flush=True)
    report["partial"] = False
    report["loadavg_end"] = os.getloadavg()
    write_outputs(out_dir, report)
    print(f"wrote {out_dir / 'ort_compare.json'} and {out_dir / 'ort_compare.md'}")


if __name__ == "__main__":
    main()
