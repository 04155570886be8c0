#!/usr/bin/env python3
"""shrink's decoder runtime against llama.cpp (llama-cpp-python) and PyTorch fp32 on SmolLM2-135M, in one run.

The baseline is the fp32 model obtained by dequantizing the published Q4_1 weights. llama.cpp quantizes those same
weights itself (requantizing the Q4_1 file to Q8_0, Q4_0 and Q4_K_M); shrink's files come from `shrink quantize`
(bench/run-llama-compare.sh makes them). Three measurements:
- speed: pp (a prompt of --pp tokens from an empty cache) and tg (--tg tokens decoded one at a time from an empty
  cache), as llama-bench times them, tokens/s as medians over --rounds rounds in which every side takes its turn at
  every thread count (shrink int8 vs llama.cpp Q8_0, shrink int4 vs llama.cpp Q4_0, llama.cpp on shrink's files,
  PyTorch fp32);
- perplexity on the golden protocol (the first 4096 tokens of WikiText-2 test, windows of 512 that do not overlap,
  every token after a window's first scored), llama.cpp's on every file and shrink's on its own: the two engines on
  one file must agree within 0.5%;
- peak RSS of shrink during a 512-token generation (the load's peak apart) against weights + KV cache + 30 MB.
Writes bench/results/llama_compare.{json,md}.

    bench/.venv-llama/bin/python bench/llama_compare.py --int8 out/smollm2-int8.gguf --int4 out/smollm2-int4.gguf
"""
import argparse
import ctypes
import datetime
import json
import math
import os
import platform
import statistics
import subprocess
import time
from pathlib import Path

import llama_cpp
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
SHRINK = ROOT / "target/release/shrink"
BASE = ROOT / "assets/models/smollm2-135m/SmolLM2-135M-Instruct.Q4_1.gguf"
TEST = ROOT / "../shared/data/wikitext-2/test.txt"
TORCH_PY = ROOT / "bench/.venv/bin/python"
PAUSE_S = 0.1  # between sides: lets the idle side's worker threads go to sleep
FTYPES = {"Q8_0": 7, "Q4_0": 2, "Q4_K_M": 15}  # llama.cpp's LLAMA_FTYPE_MOSTLY_*


def llama_quantize(ftype, out_dir):
    out = out_dir / f"smollm2-llama-{ftype}.gguf"
    if not out.exists():
        p = llama_cpp.llama_model_quantize_default_params()
        p.ftype, p.allow_requantize, p.nthread = FTYPES[ftype], True, 2
        tmp = out.with_suffix(".tmp")
        # llama.cpp logs every tensor on stderr: keep it out of the run's output.
        saved, null = os.dup(2), os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, 2)
        try:
            rc = llama_cpp.llama_model_quantize(str(BASE).encode(), str(tmp).encode(), ctypes.byref(p))
        finally:
            os.dup2(saved, 2)
        if rc != 0:
            raise SystemExit(f"llama.cpp could not quantize {BASE} to {ftype}")
        tmp.rename(out)
    return out


def cpu_name():
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def cpu_flags():
    text = Path("/proc/cpuinfo").read_text()
    return [f for f in ("avx2", "avx512f", "avx512_vnni", "amx_int8") if f" {f}" in text]


class LlamaSide:
    """One file in llama.cpp at a fixed thread count, loaded once."""

    def __init__(self, path, threads, pp):
        self.llm = llama_cpp.Llama(model_path=str(path), n_ctx=256, n_batch=pp, n_ubatch=pp, n_threads=threads,
                                   n_threads_batch=threads, verbose=False)
        self.run([0] * pp, [0])  # warm-up, as shrink's side gets one per run


    def run(self, prompt, steps):
        self.llm.reset()
        s = time.perf_counter()
        self.llm.eval(prompt)
        pp_s = time.perf_counter() - s
        self.llm.reset()
        s = time.perf_counter()
        for t in steps:
            self.llm.eval([t])
        return pp_s, time.perf_counter() - s


def shrink_bench(path, threads, pp, tg, runs=1, warmup=1):
    out = subprocess.run([str(SHRINK), "--threads", str(threads), "bench", str(path), "--pp", str(pp), "--tg", str(tg),
                          "--runs", str(runs), "--warmup", str(warmup), "--json"], check=True, capture_output=True, text=True,
                         env={"SHRINK_NO_PROGRESS": "1", "PATH": "/usr/bin:/bin"})
    return json.loads(out.stdout)


class TorchSide:
    def __init__(self):
        self.p = subprocess.Popen([str(TORCH_PY), str(ROOT / "bench/llama_torch.py"), str(BASE)], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, text=True)
        assert json.loads(self.p.stdout.readline())["ready"]

    def run(self, threads, pp, tg):
        self.p.stdin.write(f"{threads} {pp} {tg}\n")
        self.p.stdin.flush()
        r = json.loads(self.p.stdout.readline())
        return r["pp_s"], r["tg_s"]


def llama_perplexity(path, ids, ctx):
    llm = llama_cpp.Llama(model_path=str(path), n_ctx=ctx, n_batch=ctx, n_ubatch=ctx, logits_all=True, n_threads=2,
                          verbose=False)
    nll, n = 0.0, 0
    for w in range(len(ids) // ctx):
        window = ids[w * ctx:(w + 1) * ctx]
        llm.reset()
        llm.eval(window)
        logits = np.asarray(llm.scores[:ctx], dtype=np.float64)  # (T, V)
        m = logits.max(axis=1, keepdims=True)
        logp = logits - m - np.log(np.exp(logits - m).sum(axis=1, keepdims=True))
        nll -= logp[np.arange(ctx - 1), window[1:]].sum()
        n += ctx - 1
    del llm
    return math.exp(nll / n), n


def shrink_perplexity(path, tokens, ctx):
    out = subprocess.run([str(SHRINK), "--threads", "2", "eval", str(path), "--task", "perplexity", "--data", str(TEST),
                          "--max-tokens", str(tokens), "--ctx", str(ctx), "--stride", str(ctx), "--json"], check=True,
                         capture_output=True, text=True, env={"SHRINK_NO_PROGRESS": "1", "PATH": "/usr/bin:/bin"})
    r = json.loads(out.stdout)
    return r["perplexity"], r["tokens_scored"]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--int8", type=Path, required=True, help="shrink's int8 file (shrink quantize --scheme int8-dynamic)")
    ap.add_argument("--int4", type=Path, required=True, help="shrink's int4 file (shrink quantize --scheme int4)")
    ap.add_argument("--mixed", type=Path, help="shrink's int4 file with int8 sites (--max-ppl-increase), set against Q4_K_M")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--pp", type=int, default=128)
    ap.add_argument("--tg", type=int, default=64)
    ap.add_argument("--no-torch", action="store_true", help="skip the PyTorch peer (bench/.venv)")
    ap.add_argument("--out-dir", type=Path, default=ROOT / "bench/results")
    ap.add_argument("--name", default="llama_compare")
    a = ap.parse_args()
    threads = [int(t) for t in a.threads.split(",")]
    work = ROOT / "out"
    work.mkdir(exist_ok=True)
    theirs = {f: llama_quantize(f, work) for f in FTYPES}
    files = {"shrink int8": a.int8, "shrink int4": a.int4, "llama.cpp Q8_0": theirs["Q8_0"],
             "llama.cpp Q4_0": theirs["Q4_0"], "llama.cpp Q4_K_M": theirs["Q4_K_M"], "baseline Q4_1": BASE}

    # Speed: (engine, file) sides, each run at every thread count in every round.
    sides = [("shrink", "shrink int8"), ("llama.cpp", "llama.cpp Q8_0"), ("llama.cpp", "shrink int8"),
             ("shrink", "shrink int4"), ("llama.cpp", "llama.cpp Q4_0"), ("llama.cpp", "shrink int4")]
    pairs = [("shrink int8", "llama.cpp Q8_0"), ("shrink int4", "llama.cpp Q4_0")]
    if a.mixed:
        files["shrink int4 mixed"] = a.mixed
        sides += [("shrink", "shrink int4 mixed"), ("llama.cpp", "llama.cpp Q4_K_M"), ("llama.cpp", "shrink int4 mixed")]
        pairs.append(("shrink int4 mixed", "llama.cpp Q4_K_M"))
    torch_side = None if a.no_torch else TorchSide()
    if torch_side:
        sides.append(("torch fp32", "baseline Q4_1"))
    loaded = {(e, f, t): LlamaSide(files[f], t, a.pp) for e, f in sides if e == "llama.cpp" for t in threads}
    rng = np.random.default_rng(0)
    prompt, steps = [int(x) for x in rng.integers(0, 49152, a.pp)], [int(x) for x in rng.integers(0, 49152, a.tg)]
    times = {}
    for rnd in range(a.rounds):
        for t in threads:
            for e, f in sides:
                if e == "shrink":
                    r = shrink_bench(files[f], t, a.pp, a.tg)
                    pp_s, tg_s = r["pp_runs_ms"][0] / 1e3, r["tg_runs_ms"][0] / 1e3
                elif e == "llama.cpp":
                    pp_s, tg_s = loaded[(e, f, t)].run(prompt, steps)
                else:
                    pp_s, tg_s = torch_side.run(t, a.pp, a.tg)
                times.setdefault(f"{e} | {f} | {t}", []).append((pp_s, tg_s))
                time.sleep(PAUSE_S)
        print(f"round {rnd + 1}/{a.rounds} done", flush=True)
    speed = {}
    for key, v in times.items():
        e, f, t = key.split(" | ")
        speed[key] = {"engine": e, "file": f, "threads": int(t), "pp_tokens_per_s": a.pp / statistics.median(x[0] for x in v),
                      "tg_tokens_per_s": a.tg / statistics.median(x[1] for x in v), "rounds": len(v)}
    ratios = []
    for t in threads:
        for ours, peer in pairs:
            o, p = speed[f"shrink | {ours} | {t}"], speed[f"llama.cpp | {peer} | {t}"]
            ratios.append({"threads": t, "ours": ours, "peer": peer, "pp_ratio": o["pp_tokens_per_s"] / p["pp_tokens_per_s"],
                           "tg_ratio": o["tg_tokens_per_s"] / p["tg_tokens_per_s"]})
    del loaded

    # Perplexity on the golden protocol.
    text = TEST.read_text()
    llm = llama_cpp.Llama(model_path=str(BASE), vocab_only=True, verbose=False)
    ids = llm.tokenize(text.encode(), add_bos=False, special=False)[:4096]
    del llm
    ppl = {}
    for f, path in files.items():
        p, n = llama_perplexity(path, ids, 512)
        ppl[f] = {"file": str(path), "file_mb": path.stat().st_size / 1e6, "llama_cpp": p, "llama_cpp_tokens": n}
        if f.startswith("shrink") or f.startswith("baseline"):
            ppl[f]["shrink"], ppl[f]["shrink_tokens"] = shrink_perplexity(path, 4096, 512)
            ppl[f]["engines_differ"] = ppl[f]["llama_cpp"] / ppl[f]["shrink"] - 1
        print(f"perplexity {f}: {ppl[f]}", flush=True)

    # Peak RSS of a 512-token generation.
    memory = {}
    for f in [f for f in files if f.startswith("shrink")]:
        r = shrink_bench(files[f], 2, 1, 512, runs=1, warmup=0)
        memory[f] = {k: r[k] for k in ("peak_rss_mb", "load_peak_rss_mb", "weights_mb", "kv_cache_mb", "file_mb")}
        memory[f]["budget_mb"] = r["weights_mb"] + r["kv_cache_mb"] + 30

    result = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"), "cpu": cpu_name(),
              "cpu_flags": cpu_flags(), "cores": len(os.sched_getaffinity(0)),
              "llama_cpp_python": llama_cpp.__version__, "pp": a.pp, "tg": a.tg, "rounds": a.rounds,
              "speed": list(speed.values()), "ratios": ratios, "perplexity": ppl, "memory": memory}
    a.out_dir.mkdir(parents=True, exist_ok=True)
    (a.out_dir / f"{a.name}.json").write_text(json.dumps(result, indent=2) + "\n")
    (a.out_dir / f"{a.name}.md").write_text(render(result))
    print(render(result))


def render(r):
    lines = [f"# Decoder: shrink vs llama.cpp (SmolLM2-135M)", "",
             f"{r['date']}, {r['cpu']} ({', '.join(r['cpu_flags'])}), {r['cores']} cores; llama-cpp-python "
             f"{r['llama_cpp_python']}; medians of {r['rounds']} interleaved rounds. Baseline: the fp32 model "
             "dequantized from the published Q4_1 weights.", "",
             f"## Speed (pp{r['pp']} / tg{r['tg']}, tokens/s)", "", "| engine | file | threads | pp | tg |", "|---|---|---|---|---|"]
    for s in r["speed"]:
        lines.append(f"| {s['engine']} | {s['file']} | {s['threads']} | {s['pp_tokens_per_s']:.1f} | {s['tg_tokens_per_s']:.1f} |")
    lines += ["", "| threads | ours | peer | pp ratio (target >= 1.0) | tg ratio (target >= 1.2) |", "|---|---|---|---|---|"]
    for x in r["ratios"]:
        lines.append(f"| {x['threads']} | {x['ours']} | {x['peer']} | {x['pp_ratio']:.2f}x | {x['tg_ratio']:.2f}x |")
    lines += ["", "## Perplexity (WikiText-2 test, first 4096 tokens, windows of 512)", "",
              "| file | MB | llama.cpp | shrink | engines differ (target within 0.5%) |", "|---|---|---|---|---|"]
    for f, p in r["perplexity"].items():
        ours = f"{p['shrink']:.3f}" if "shrink" in p else "-"
        diff = f"{100 * p['engines_differ']:+.2f}%" if "engines_differ" in p else "-"
        lines.append(f"| {f} | {p['file_mb']:.1f} | {p['llama_cpp']:.3f} | {ours} | {diff} |")
    lines += ["", "## Peak RSS of a 512-token generation (2 threads)", "",
              "| file | peak RSS MB, generating | budget MB (weights + KV + 30) | weights MB | KV cache MB | peak RSS MB, loading |",
              "|---|---|---|---|---|---|"]
    for f, m in r["memory"].items():
        lines.append(f"| {f} | {m['peak_rss_mb']:.1f} | {m['budget_mb']:.1f} | {m['weights_mb']:.1f} | {m['kv_cache_mb']:.1f} | "
                     f"{m['load_peak_rss_mb']:.1f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
