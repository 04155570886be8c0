"""Table, JSON and heads-curve SVG of bench/run-prune.sh: argv = N, N model dirs, N eval JSONs, --, (dir, bench JSON)*."""
import json
import os
import statistics
import sys

n = int(sys.argv[1])
models, evals = sys.argv[2:2 + n], [json.loads(e) for e in sys.argv[2 + n:2 + 2 * n]]
rest = sys.argv[2 + 2 * n + 1:]
runs = {}
for m, b in zip(rest[::2], rest[1::2]):
    b = json.loads(b)
    runs.setdefault(m, []).extend(b["runs_ms"])
teacher = models[0]
base_ms = statistics.median(runs[teacher])
rows = []
for m, e in zip(models, evals):
    ms = statistics.median(runs[m]) if m in runs else None
    rows.append({"model": m, "accuracy": e["accuracy"], "macro_f1": e["macro_f1"], "median_ms": ms,
                 "latency_ratio": ms / base_ms if ms else None,
                 "file_mb": os.path.getsize(os.path.join(m, "model.safetensors")) / 1e6})
lines = ["| model | accuracy | macro F1 | median ms (1 x 128, 1 thread) | vs teacher | file MB |", "|---|---:|---:|---:|---:|---:|"]
for r in rows:
    ms = f"{r['median_ms']:.1f}" if r["median_ms"] else "-"
    ratio = f"{r['latency_ratio']:.2f}x" if r["latency_ratio"] else "-"
    mb = f"{r['file_mb']:.1f}" if r["file_mb"] else "-"
    lines.append(f"| {r['model']} | {100 * r['accuracy']:.2f}% | {r['macro_f1']:.4f} | {ms} | {ratio} | {mb} |")
table = "\n".join(lines) + "\n"
print(table)
open("bench/results/prune.md", "w").write(table)
json.dump(rows, open("bench/results/prune.json", "w"), indent=1)

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
