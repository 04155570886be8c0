"""Latency and memory of full, sliding-window and linear attention against T (issue 19), on shrink's runtime.

Each (T, variant, precision) is timed in a fresh `shrink --threads 1 bench` process (so its peak RSS is its own),
interleaved over rounds; medians of the rounds. The speed-up over full attention is set against the bound the
matmul FLOPs give at that T. With --torch PYTHON, PyTorch's full attention (BertModel, SDPA, fp32, 1 thread) on the
same weights runs in the same rounds (bench/attention_torch.py, a fresh process per point too) as the peer.
Writes bench/results/attention_curve.{json,md,svg}. Run by bench/run-attention-curve.sh.
"""

import argparse
import datetime
import json
import math
import pathlib
import platform
import statistics
import subprocess

SHRINK = "target/release/shrink"
COLOURS = {"full": "#c0392b", "sliding": "#2471a3", "linear": "#229954", "hedgehog": "#8e44ad", "torch": "#7f8c8d"}
LABELS = {"linear": "linear (elu + 1)", "hedgehog": "linear (Hedgehog)", "torch": "PyTorch SDPA full"}


def cpu_name():
    out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    return next((l.split(":", 1)[1].strip() for l in out.splitlines() if l.startswith("Model name")), platform.processor())


def bench(model, t, runs):
    cmd = [SHRINK, "--threads", "1", "bench", model, "--seq", str(t), "--runs", str(runs), "--json"]
    r = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(r.stdout)


def bench_torch(python, model, t, runs):
    cmd = [python, "bench/attention_torch.py", "--model", model, "--t", str(t), "--runs", str(runs)]
    r = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(r.stdout.strip().splitlines()[-1])


def macs_per_token(cfg, kind, t):
    """Matmul multiply-adds per token and layer: projections and FFN, then attention's two products."""
    c, f = cfg["hidden_size"], cfg["intermediate_size"]
    d = c // cfg["num_attention_heads"]
    proj = 4 * c * c + 2 * c * f
    if kind["kind"] == "linear" and kind.get("feature_map") == "hedgehog":
        return proj + 6 * c * d + 2 * c  # 2D features: φ(K)ᵀV, φ(Q)·S and the normaliser, plus the two D x D maps
    if kind["kind"] == "linear":
        return proj + 2 * c * d + c  # φ(K)ᵀV and φ(Q)·S, plus the normaliser
    keys = t
    if kind["kind"] == "sliding":
        # Keys each query sees, on average: its band clipped at both ends plus the global keys before it; the
        # global tokens' own rows see all T.
        w, g = kind["window"], kind.get("global", 0)
        seen = 0
        for i in range(t):
            lo, hi = max(0, i - w), min(t - 1, i + w)
            seen += t if i < g else hi - lo + 1 + min(g, lo)
        keys = seen / t
    return proj + 2 * c * keys


def svg_plot(rows, ts, variants, precisions):
    """Two panels, log-log: latency (ms) and the memory the forward adds (MB) against T."""
    w, h, pad = 460, 300, 55
    parts = []
    for panel, (key, title) in enumerate([("median_ms", "latency, ms (1 thread, batch 1)"), ("added_mb", "memory added by the forward, MB")]):
        x0 = panel * (w + 30)
        vals = [r[key] for r in rows if r[key] > 0]
        lo, hi = math.log10(min(vals)) - 0.1, math.log10(max(vals)) + 0.1
        tx = lambda t: x0 + pad + (math.log2(t) - math.log2(ts[0])) / (math.log2(ts[-1]) - math.log2(ts[0])) * (w - pad - 15)
        ty = lambda v: 20 + (hi - math.log10(max(v, 1e-9))) / (hi - lo) * (h - pad - 20)
        parts.append(f'<text x="{x0 + w / 2}" y="14" text-anchor="middle" font-size="13">{title}</text>')
        parts.append(f'<line x1="{x0 + pad}" y1="{h - pad + 5}" x2="{x0 + w - 10}" y2="{h - pad + 5}" stroke="#444"/>')
        parts.append(f'<line x1="{x0 + pad - 5}" y1="20" x2="{x0 + pad - 5}" y2="{h - pad + 5}" stroke="#444"/>')
        for t in ts:
            parts.append(f'<text x="{tx(t):.1f}" y="{h - pad + 20}" text-anchor="middle" font-size="11">{t}</text>')
        parts.append(f'<text x="{x0 + w / 2}" y="{h - pad + 36}" text-anchor="middle" font-size="11">T (tokens)</text>')
        for e in range(math.ceil(lo), math.floor(hi) + 1):
            for m in (1, 2, 5):
                v = m * 10**e
                if lo <= math.log10(v) <= hi:
                    parts.append(f'<text x="{x0 + pad - 8}" y="{ty(v) + 4:.1f}" text-anchor="end" font-size="10">{v:g}</text>')
                    parts.append(f'<line x1="{x0 + pad - 5}" y1="{ty(v):.1f}" x2="{x0 + w - 10}" y2="{ty(v):.1f}" stroke="#eee"/>')
        for v in variants:
            for p in precisions:
                if v == "torch" and p != "fp32":
                    continue
                pts = [(tx(r["t"]), ty(r[key])) for r in rows if r["variant"] == v and r["precision"] == p and r[key] > 0]
                dash = ' stroke-dasharray="5,3"' if p != "fp32" else ""
                path = " ".join(f"{x:.1f},{y:.1f}" for x, y in pts)
                parts.append(f'<polyline points="{path}" fill="none" stroke="{COLOURS[v]}" stroke-width="2"{dash}/>')
                parts += [f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2.5" fill="{COLOURS[v]}"/>' for x, y in pts]
    legend = []
    for i, v in enumerate(variants):
        legend.append(f'<line x1="{70 + i * 140}" y1="{h + 12}" x2="{95 + i * 140}" y2="{h + 12}" stroke="{COLOURS[v]}" stroke-width="2"/>')
        legend.append(f'<text x="{100 + i * 140}" y="{h + 16}" font-size="11">{LABELS.get(v, v)}</text>')
    if len(precisions) > 1:
        legend.append(f'<text x="{80 + len(variants) * 140}" y="{h + 16}" font-size="11">solid: {precisions[0]}, dashed: {", ".join(precisions[1:])}</text>')
    body = "\n".join(parts + legend)
    return f'<svg xmlns="http://www.w3.org/2000/svg" width="{2 * w + 30}" height="{h + 30}" font-family="sans-serif">\n<rect width="100%" height="100%" fill="white"/>\n{body}\n</svg>\n'


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", default="out/attention-curve")
    ap.add_argument("--ts", default="128,512,1024,2048,4096")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--precisions", default="fp32,int8")
    ap.add_argument("--out", default="bench/results/attention_curve")
    ap.add_argument("--torch", help="a Python with torch and transformers: PyTorch SDPA full attention as the peer")
    a = ap.parse_args()
    ts = [int(t) for t in a.ts.split(",")]
    variants, precisions = ["full", "sliding", "linear", "hedgehog"], a.precisions.split(",")
    models = {(v, p): f"{a.work}/{v}" + ("" if p == "fp32" else f"-{p}") for v in variants for p in precisions}
    cfgs = {v: json.loads(pathlib.Path(f"{a.work}/{v}/config.json").read_text()) for v in variants}
    samples = {}
    for rnd in range(a.rounds):
        for t in ts:
            runs = max(3, min(20, 40960 // (t * 4)))
            for p in precisions:
                for v in variants:
                    r = bench(models[(v, p)], t, runs)
                    samples.setdefault((t, v, p), []).append(r)
                    print(f"round {rnd + 1} T {t} {v} {p}: {r['median_ms']:.1f} ms, +{r['run_peak_rss_mb'] - r['loaded_rss_mb']:.1f} MB", flush=True)
            if a.torch:
                r = bench_torch(a.torch, models[("full", "fp32")], t, max(3, runs // 2))
                samples.setdefault((t, "torch", "fp32"), []).append(r)
                print(f"round {rnd + 1} T {t} torch sdpa fp32: {r['median_ms']:.1f} ms, +{r['run_peak_rss_mb'] - r['loaded_rss_mb']:.1f} MB", flush=True)
    peer = [r for r in samples if r[1] == "torch"]
    torch_version = samples[peer[0]][0]["torch"] if peer else None
    rows = []
    for (t, v, p), rs in sorted(samples.items()):
        kind = (cfgs.get(v, {}).get("shrink_attention") or [{"kind": "full"}])[0]
        rows.append({
            "t": t, "variant": v, "precision": p, "attention": kind,
            "median_ms": statistics.median(r["median_ms"] for r in rs),
            "rounds_ms": [r["median_ms"] for r in rs],
            "peak_rss_mb": statistics.median(r["peak_rss_mb"] for r in rs),
            "loaded_rss_mb": statistics.median(r["loaded_rss_mb"] for r in rs),
            "added_mb": statistics.median(r["run_peak_rss_mb"] - r["loaded_rss_mb"] for r in rs),
            "weights_mb": rs[0]["weights_mb"],
        })
    for r in rows:
        full = next(x for x in rows if x["t"] == r["t"] and x["precision"] == r["precision"] and x["variant"] == "full")
        cfg = cfgs["full"]
        r["speedup"] = full["median_ms"] / r["median_ms"]
        r["flop_bound"] = macs_per_token(cfg, {"kind": "full"}, r["t"]) / macs_per_token(cfg, r["attention"], r["t"])
        r["of_bound"] = r["speedup"] / r["flop_bound"]
    meta = {
        "cpu": cpu_name(), "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "model": "all-MiniLM-L6-v2 (C 384, 6 layers, 12 heads of 32), positions copied to 4096", "threads": 1, "batch": 1,
        "rounds": a.rounds, "note": "fresh process per point; medians over rounds; added_mb = peak RSS while running - RSS after loading",
        "peer": f"PyTorch {torch_version} BertModel, attn_implementation sdpa, fp32, 1 thread, no_grad" if peer else None,
    }
    shown = variants + (["torch"] if peer else [])
    out = pathlib.Path(a.out)
    out.with_suffix(".json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n")
    out.with_suffix(".svg").write_text(svg_plot(rows, ts, shown, precisions))
    md = [f"# Attention variants against T: latency and memory\n",
          f"{meta['model']}. Host: {meta['cpu']}, {meta['date']}. 1 thread, batch 1, {a.rounds} interleaved rounds, a fresh process per point. "
          "Bound: the speed-up over full attention that the matmul FLOPs allow at that T (projections, FFN and attention's products). "
          "Memory added: peak RSS while running minus RSS after loading (activations, staging, attention scratch).\n",
          f"![latency and memory against T]({out.name}.svg)\n",
          "| precision | T | attention | median ms | speed-up vs full | FLOP bound | of bound | peak RSS MB | added by the forward MB |",
          "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in sorted((r for r in rows if r["variant"] != "torch"), key=lambda r: (r["precision"] != "fp32", r["precision"], r["t"], variants.index(r["variant"]))):
        md.append(f"| {r['precision']} | {r['t']} | {LABELS.get(r['variant'], r['variant'])} | {r['median_ms']:.1f} | {r['speedup']:.2f}x | {r['flop_bound']:.2f}x | {r['of_bound']:.2f} | {r['peak_rss_mb']:.1f} | {r['added_mb']:.1f} |")
    if peer:
        md += [f"\nThe peer in the same rounds: {meta['peer']}, on the same weights (full attention).\n",
               "| T | PyTorch ms | shrink full fp32 ms | shrink full / PyTorch | shrink sliding fp32 / PyTorch | shrink linear fp32 / PyTorch | PyTorch added MB |",
               "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
        at = {(r["t"], r["variant"], r["precision"]): r for r in rows}
        for t in ts:
            tr = at[(t, "torch", "fp32")]
            ratio = lambda v: at[(t, v, "fp32")]["median_ms"] / tr["median_ms"]
            md.append(f"| {t} | {tr['median_ms']:.1f} | {at[(t, 'full', 'fp32')]['median_ms']:.1f} | {ratio('full'):.2f}x | {ratio('sliding'):.2f}x | {ratio('linear'):.2f}x | {tr['added_mb']:.1f} |")
    out.with_suffix(".md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
