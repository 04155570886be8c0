"""Table, JSON and heads-curve SVG of bench/run-prune.sh: argv = N, N model dirs, N eval JSONs, --, (dir, bench JSON)*.
A bench entry named `ort-fp32` is ONNX Runtime fp32 on the unpruned model, timed in the same rounds."""
import json
import os
import statistics
import subprocess
import sys


def params(model):
    """(all parameters, encoder-layer parameters) from `shrink inspect --json`."""
    d = json.loads(subprocess.run(["target/release/shrink", "inspect", model, "--json"], check=True, capture_output=True, text=True).stdout)
    return d["total"]["params"], sum(layer[1]["params"] if isinstance(layer, list) else layer["params"] for layer in d["layers"])

n = int(sys.argv[1])
models, evals = sys.argv[2:2 + n], [json.loads(e) for e in sys.argv[2 + n:2 + 2 * n]]
rest = sys.argv[2 + 2 * n + 1:]
runs = {}
for m, b in zip(rest[::2], rest[1::2]):
    b = json.loads(b)
    runs.setdefault(m, []).extend(b["runs_ms"])
teacher = models[0]
base_ms = statistics.median(runs[teacher])
ort_ms = statistics.median(runs["ort-fp32"]) if "ort-fp32" in runs else None
base_mb = os.path.getsize(os.path.join(teacher, "model.safetensors")) / 1e6
rows = []
for m, e in zip(models, evals):
    ms = statistics.median(runs[m]) if m in runs else None
    mb = os.path.getsize(os.path.join(m, "model.safetensors")) / 1e6
    total, encoder = params(m)
    rows.append({"model": m, "accuracy": e["accuracy"], "macro_f1": e["macro_f1"], "params_m": total / 1e6, "encoder_params_m": encoder / 1e6,
                 "median_ms": ms,
                 "latency_ratio": ms / base_ms if ms else None, "vs_ort_fp32": ms / ort_ms if ms and ort_ms else None,
                 "file_mb": mb, "file_ratio": mb / base_mb})
fmt = lambda v, f: f.format(v) if v else "-"
lines = ["| model | accuracy | macro F1 | params M (encoder) | median ms (1 x 128, 1 thread) | vs teacher | vs ORT fp32 | file MB | vs teacher |",
         "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
for r in rows:
    lines.append(f"| {r['model']} | {100 * r['accuracy']:.2f}% | {r['macro_f1']:.4f} | {r['params_m']:.1f} ({r['encoder_params_m']:.1f}) "
                 f"| {fmt(r['median_ms'], '{:.1f}')} "
                 f"| {fmt(r['latency_ratio'], '{:.2f}x')} | {fmt(r['vs_ort_fp32'], '{:.2f}x')} | {r['file_mb']:.1f} "
                 f"| {r['file_ratio']:.2f}x |")
if ort_ms:
    lines.append(f"| ONNX Runtime fp32, unpruned (`bench/work/ort/fp32.onnx`) | | | | {ort_ms:.1f} | {ort_ms / base_ms:.2f}x | 1.00x | | |")
table = "\n".join(lines) + "\n"
print(table)
open("bench/results/prune.md", "w").write(table)
json.dump({"rows": rows, "ort_fp32_median_ms": ort_ms}, open("bench/results/prune.json", "w"), indent=1)

# Accuracy against the fraction of heads removed (no recovery): the teacher, then h25, h5 (0.5), h75.
curve = [(0.0, evals[0]["accuracy"])] + [(f, e["accuracy"]) for m, e in zip(models, evals)
                                         for f in [{"h25": 0.25, "h5": 0.5, "h75": 0.75}.get(m.rsplit("/", 1)[-1])] if f is not None]
curve.sort()
w, h, left, top, pw, ph = 420, 300, 60, 30, 320, 220
pt = lambda f, a: (left + f * pw, top + (1 - a) * ph)
svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="11">',
       f'<text x="10" y="18" font-size="13">BBC test accuracy vs heads removed (no recovery, FFN kept)</text>',
       f'<line x1="{left}" y1="{top + ph}" x2="{left + pw}" y2="{top + ph}" stroke="black"/>',
       f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + ph}" stroke="black"/>']
for a in (0.0, 0.25, 0.5, 0.75, 1.0):
    x, y = pt(0, a)
    svg.append(f'<text x="{x - 30}" y="{y + 4}">{100 * a:.0f}%</text>')
    x, y = pt(a, 0)
    svg.append(f'<text x="{x - 8}" y="{y + 16}">{a:.2f}</text>')
svg.append('<polyline fill="none" stroke="#2e86c1" stroke-width="2" points="' + " ".join(f"{pt(f, a)[0]:.1f},{pt(f, a)[1]:.1f}" for f, a in curve) + '"/>')
for f, a in curve:
    x, y = pt(f, a)
    svg.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="#2e86c1"/><text x="{x + 5:.1f}" y="{y - 5:.1f}">{100 * a:.1f}%</text>')
svg.append("</svg>\n")
open("bench/results/prune_heads_curve.svg", "w").write("\n".join(svg))
