#!/usr/bin/env python3
"""Counts instructions and simulated cache misses per forward pass of shrink and ONNX Runtime under
valgrind's callgrind: an ISA-fair comparison on any machine, since valgrind presents a Haswell-class
CPU (AVX2 + FMA, no AVX-512, no AMX) and both sides take their AVX2 paths there (checked: the
functions that ran are listed, and any AVX-512, VNNI or AMX kernel among them fails the run).

Per side and case, two runs in fresh processes: N = 1 and N = 11 forwards (no warm-up), and the
difference over 10 is the per-forward figure, so start-up and loading cancel. The cache model is
fixed, not the host's: L1 I and D 32 KiB 8-way, last level 8 MiB 16-way, 64-byte lines.

    shrink   target/release/shrink --threads 1 bench MODEL --batch B --seq T --runs N --warmup 0
             (fp32: the HF folder; int8: bench/work/shrink-int8, `shrink quantize --scheme int8-dynamic`)
    ORT      bench/ort_time.py --model bench/work/ort/{,fused-}{fp32,int8}.onnx ... --runs N --warmup 0

Writes bench/results/callgrind.{json,md}; the ratio is shrink over the better ORT variant (fewer
instructions). Needs bench/.venv and the ORT models (bench/run-callgrind.sh makes both). The ORT sides are
cached in bench/work/callgrind-cache.json (by command, model file and cache model), since only shrink changes.

    bench/.venv/bin/python bench/callgrind.py [--cases 1x128] [--precisions fp32,int8] [--no-cache-sim]
"""
import argparse
import datetime
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

CACHE = ["--I1=32768,8,64", "--D1=32768,8,64", "--LL=8388608,16,64"]
EVENTS = ("Ir", "D1mr", "D1mw", "DLmr", "DLmw")
# Kernels of levels valgrind does not present: seeing one run means the comparison is not at AVX2.
ABOVE_AVX2 = re.compile(r"avx512|Avx512|AVX512|amx|Amx|Vnni|vnni")
TARGETS = {"fp32": 0.9, "int8": 0.5}


def callgrind(cmd, cache_sim, env=None):
    """Totals of the events and the names of the functions that ran, of one command under callgrind."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "callgrind.out"
        vg = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}"]
        vg += (["--cache-sim=yes"] + CACHE) if cache_sim else []
        p = subprocess.run(vg + cmd, capture_output=True, text=True, env={**os.environ, **(env or {})})
        if p.returncode != 0:
            sys.exit(f"`{' '.join(cmd)}` under callgrind failed ({p.returncode}):\n{p.stderr[-3000:]}")
        events, totals, names = None, None, set()
        for line in out.read_text(errors="replace").splitlines():
            if line.startswith("events:"):
                events = line.split()[1:]
            elif line.startswith(("summary:", "totals:")):
                totals = [int(x) for x in line.split()[1:]]
            elif line.startswith(("fn=", "cfn=")):
                names.add(line.split(")", 1)[-1].strip())
        if events is None or totals is None:
            sys.exit(f"no totals in the callgrind output of `{' '.join(cmd)}`")
        return dict(zip(events, totals)), names


def per_forward(cmd_for, cache_sim, env=None):
    """(events per forward, kernels above AVX2 that ran, the GEMM kernel names that ran)."""
    (one, names1), (eleven, names) = callgrind(cmd_for(1), cache_sim, env), callgrind(cmd_for(11), cache_sim, env)
    names |= names1
    per = {e: (eleven[e] - one[e]) / 10 for e in EVENTS if e in one}
    above = sorted(n for n in names if ABOVE_AVX2.search(n))
    kernels = sorted(n for n in names if re.search(r"[Gg]emm|qgemm|sgemm|MatMul", n) and re.search(r"[Aa]vx|Fma|x86", n))
    return per, above, kernels[:12]


def cached(key_cmd, files, cache_sim, compute, path=Path("bench/work/callgrind-cache.json")):
    """`compute()` once per command, input files (size, mtime) and cache model: the ORT sides do not change
    between runs that only rebuild shrink."""
    key = json.dumps([key_cmd, [(str(f), f.stat().st_size, f.stat().st_mtime) for f in files], cache_sim])
    store = json.loads(path.read_text()) if path.exists() else {}
    if key not in store:
        store[key] = compute()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(store))
    return store[key]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shrink", default="target/release/shrink")
    ap.add_argument("--model", default="assets/models/all-MiniLM-L6-v2", help="fp32 HF folder")
    ap.add_argument("--shrink-int8", default="bench/work/shrink-int8")
    ap.add_argument("--ort-dir", default="bench/work/ort")
    ap.add_argument("--cases", default="1x128")
    ap.add_argument("--precisions", default="fp32,int8")
    ap.add_argument("--no-cache-sim", action="store_true", help="instructions only (about twice as fast)")
    ap.add_argument("--out-dir", default="bench/results")
    args = ap.parse_args()
    cache_sim = not args.no_cache_sim
    py = sys.executable
    rows = []
    for case in args.cases.split(","):
        b, t = (int(x) for x in case.lower().split("x"))
        for prec in args.precisions.split(","):
            model = args.model if prec == "fp32" else args.shrink_int8
            sides = {
                "shrink": (lambda n, m=model: [args.shrink, "--threads", "1", "bench", m, "--batch", str(b), "--seq", str(t),
                                                "--runs", str(n), "--warmup", "0", "--json"], {"SHRINK_NO_PROGRESS": "1"}),
            }
            for variant, name in (("ort-plain", f"{prec}.onnx"), ("ort-fused", f"fused-{prec}.onnx")):
                onnx = Path(args.ort_dir) / name
                sides[variant] = (lambda n, o=onnx: [py, "bench/ort_time.py", "--model", str(o), "--batch", str(b), "--seq", str(t),
                                                     "--threads", "1", "--runs", str(n), "--warmup", "0"], {"OMP_NUM_THREADS": "1"})
            result = {"case": case, "precision": prec, "sides": {}}
            for side, (cmd_for, env) in sides.items():
                print(f"{case} {prec} {side} under callgrind ...", file=sys.stderr, flush=True)
                if side == "shrink":
                    per, above, kernels = per_forward(cmd_for, cache_sim, env)
                else:
                    onnx = Path(cmd_for(1)[3])
                    per, above, kernels = cached(cmd_for(1), [onnx, Path("bench/ort_time.py")], cache_sim,
                                                 lambda: per_forward(cmd_for, cache_sim, env))
                if above:
                    sys.exit(f"{side} {prec} ran kernels above AVX2 under valgrind: {above[:8]}")
                result["sides"][side] = {"per_forward": per, "kernels": kernels}
                print(f"  {per}", file=sys.stderr, flush=True)
            ort = min(("ort-plain", "ort-fused"), key=lambda s: result["sides"][s]["per_forward"]["Ir"])
            s, o = result["sides"]["shrink"]["per_forward"], result["sides"][ort]["per_forward"]
            result["best_ort"] = ort
            result["ratio_ir"] = s["Ir"] / o["Ir"]
            if cache_sim:
                result["ratio_d1_misses"] = (s["D1mr"] + s["D1mw"]) / (o["D1mr"] + o["D1mw"])
                result["ratio_ll_misses"] = (s["DLmr"] + s["DLmw"]) / max(1, o["DLmr"] + o["DLmw"])
            rows.append(result)
    report = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "valgrind": subprocess.run(["valgrind", "--version"], capture_output=True, text=True).stdout.strip(),
        "cache_model": CACHE if cache_sim else None,
        "host_cpu": next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?"),
        "targets": TARGETS,
        "results": rows,
    }
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "callgrind.json").write_text(json.dumps(report, indent=1) + "\n")
    md = ["# Instructions per forward under callgrind (AVX2 paths on both sides)", "",
          f"{report['valgrind']}, which presents a Haswell-class CPU: AVX2 + FMA, no AVX-512, no AMX. Host: {report['host_cpu']} "
          f"(the counts do not depend on it). {report['date']}. One thread, batch 1. Per forward = (11 forwards - 1) / 10 in fresh "
          "processes. Cache model: " + (" ".join(CACHE) if cache_sim else "off") + ".", "",
          "| precision | case | shrink M instr | ORT plain M instr | ORT fused M instr | ratio (vs better ORT) | target | D1 misses ratio | LL misses ratio |",
          "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        sd = r["sides"]
        m = lambda s: f"{sd[s]['per_forward']['Ir'] / 1e6:.1f}"
        lim = TARGETS.get(r["precision"])
        ok = "met" if lim and r["ratio_ir"] <= lim else "**not met**"
        md.append(f"| {r['precision']} | {r['case']} | {m('shrink')} | {m('ort-plain')} | {m('ort-fused')} | {r['ratio_ir']:.2f} | "
                  f"<= {lim} ({ok}) | {r.get('ratio_d1_misses', float('nan')):.2f} | {r.get('ratio_ll_misses', float('nan')):.2f} |")
    md += ["", "GEMM kernels that ran, per side:", ""]
    for r in rows:
        for side, v in r["sides"].items():
            md.append(f"- {r['precision']} {side}: {', '.join(v['kernels']) or '(none matched)'}")
    (out / "callgrind.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
