#!/usr/bin/env python3
"""Times shrink against PyTorch on all-MiniLM-L6-v2, interleaved in one run.

shrink runs as a child process (`shrink-timing`, a line protocol on stdin/stdout);
PyTorch runs in this process. For each thread count and case the two sides take
turns, R repetitions each, for K rounds, so drift in machine load (thermal, other
jobs) hits both sides alike. Writes <out-dir>/<name>.{json,md} (name: torch_compare).

    bench/.venv/bin/python bench/compare_torch.py --threads 1,2 --quick
"""
import argparse
import copy
import datetime
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the model is a local folder; never touch the network
import torch  # noqa: E402
import transformers  # noqa: E402
from transformers import BertModel  # noqa: E402

# Default repetitions per round: with 5 rounds the whole run stays well under 10 min on 2 cores
# (torch at 1 thread: ~40 ms, ~1.1 s, ~2 s per rep), even if shrink is a few times slower.
DEFAULT_REPS = {"forward-1x128": 20, "forward-32x128": 2, "train-16x128": 2, "distill-16x128": 3}
# One step of `shrink distill`'s recipe, mirrored from bench/timing/src/timing.rs: a student of teacher layers
# 1, 3, 5, loss 0.5 CE + 0.5 KL at T=2 (times T^2) + 1.0 hidden-state MSE of the mapped layers, teacher cached.
STUDENT_LAYERS = (1, 3, 5)
CE_W, KL_W, T, HIDDEN_W = 0.5, 0.5, 2.0, 1.0
PAUSE_S = 0.1  # between sides: lets the idle side's spinning worker threads go to sleep


def parse_case(name):
    m = re.fullmatch(r"(forward|train|distill)-(\d+)x(\d+)", name)
    if not m:
        sys.exit(f"bad case {name!r}: expected forward-BxT, train-BxT or distill-BxT")
    return m[1], int(m[2]), int(m[3])


def bench_batch(b, t):
    """Token ids, mask and labels; must match bench_batch in bench/timing/src/timing.rs."""
    ids = torch.tensor([[1000 + (bi * 131 + ti * 7919) % 28000 for ti in range(t)] for bi in range(b)])
    ids[:, 0], ids[:, -1] = 101, 102  # [CLS] ... [SEP]
    return ids, torch.ones(b, t, dtype=torch.long), torch.arange(b) % 5


def mean_pool(hidden, mask):
    """Mean over real tokens. hidden: (B, T, C), mask: (B, T) -> (B, C)"""
    m = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)


class Torch:
    """The PyTorch side: inference on the pretrained weights, training on a copy."""

    def __init__(self, model_dir):
        self.model = BertModel.from_pretrained(model_dir).eval()
        self.train_model = None  # made on first use, so forward always sees the pretrained weights

    def _train_setup(self):
        torch.manual_seed(0)
        self.train_model = copy.deepcopy(self.model).train()  # train(): dropout as in config
        self.head = torch.nn.Linear(self.model.config.hidden_size, 5)
        self.train_params = list(self.train_model.parameters()) + list(self.head.parameters())
        self.opt = torch.optim.AdamW(self.train_params, lr=5e-5, weight_decay=0.01)

    def forward(self, ids, mask, _labels):
        with torch.inference_mode():
            self.model(input_ids=ids, attention_mask=mask)

    def train(self, ids, mask, labels):
        if self.train_model is None:
            self._train_setup()
        hidden = self.train_model(input_ids=ids, attention_mask=mask).last_hidden_state
        loss = torch.nn.functional.cross_entropy(self.head(mean_pool(hidden, mask)), labels)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.train_params, 1.0)  # shrink's recipe clips at 1.0 too
        self.opt.step()
        self.opt.zero_grad()

    def _distill_setup(self, ids, mask):
        """Student from teacher layers, teacher logits and mapped hidden states cached once (as shrink does)."""
        torch.manual_seed(0)
        teacher_head = torch.nn.Linear(self.model.config.hidden_size, 5)
        with torch.no_grad():  # not inference_mode: the cached targets take part in the student's backward
            out = self.model(input_ids=ids, attention_mask=mask, output_hidden_states=True)
            pooled = mean_pool(out.last_hidden_state, mask)
            cached = {"logits": teacher_head(pooled).clone(),
                      "hidden": [out.hidden_states[l + 1].clone() for l in STUDENT_LAYERS]}
        student = copy.deepcopy(self.model).train()
        student.encoder.layer = torch.nn.ModuleList([student.encoder.layer[l] for l in STUDENT_LAYERS])
        student.config.num_hidden_layers = len(STUDENT_LAYERS)
        head = copy.deepcopy(teacher_head)
        params = list(student.parameters()) + list(head.parameters())
        self.distill_state = {"shape": tuple(ids.shape), "student": student, "head": head, "params": params,
                              "opt": torch.optim.AdamW(params, lr=5e-5, weight_decay=0.01), **cached}

    def distill(self, ids, mask, labels):
        st = getattr(self, "distill_state", None)
        if st is None or st["shape"] != tuple(ids.shape):
            self._distill_setup(ids, mask)
            st = self.distill_state
        out = st["student"](input_ids=ids, attention_mask=mask, output_hidden_states=True)
        logits = st["head"](mean_pool(out.last_hidden_state, mask))
        f = torch.nn.functional
        ce = f.cross_entropy(logits, labels)
        kl = f.kl_div(f.log_softmax(logits / T, -1), f.log_softmax(st["logits"] / T, -1), log_target=True,
                      reduction="batchmean") * T * T
        m = mask.unsqueeze(-1).to(logits.dtype)
        hidden = sum(((h - target) ** 2 * m).sum() / (m.sum() * h.shape[-1])
                     for h, target in zip(out.hidden_states[1:], st["hidden"])) / len(STUDENT_LAYERS)
        (CE_W * ce + KL_W * kl + HIDDEN_W * hidden).backward()
        torch.nn.utils.clip_grad_norm_(st["params"], 1.0)
        st["opt"].step()
        st["opt"].zero_grad()

    def run(self, kind, b, t, reps):
        batch = bench_batch(b, t)
        step = getattr(self, kind)
        ms = []
        for _ in range(reps):
            start = time.perf_counter()
            step(*batch)
            ms.append((time.perf_counter() - start) * 1e3)
        return ms


class Shrink:
    """The shrink side: `shrink-timing` child, one command line in, one JSON line out."""

    def __init__(self, binary, model_dir, threads):
        env = dict(os.environ, RAYON_NUM_THREADS=str(threads))
        cmd = [binary, "--model", model_dir, "--threads", str(threads)]
        # stderr is inherited so the child's errors show up as they happen.
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)

    def run(self, kind, b, t, reps):
        self.proc.stdin.write(f"{kind} {b} {t} {reps}\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"shrink-timing exited ({self.proc.wait()}) on `{kind} {b} {t} {reps}`")
        ms = json.loads(line)["ms"]
        if len(ms) != reps:
            raise RuntimeError(f"shrink answered {len(ms)} times for {reps} reps: {line.strip()}")
        return ms

    def close(self):
        self.proc.stdin.close()  # EOF ends the server
        self.proc.wait(timeout=60)


def summary(ms):
    q = statistics.quantiles(ms, n=10, method="inclusive") if len(ms) > 1 else ms * 9
    return {"median_ms": statistics.median(ms), "p90_ms": q[8], "n": len(ms), "ms": [round(x, 3) for x in ms]}


def machine_info():
    cpu = next((l.split(":", 1)[1].strip() for l in Path("/proc/cpuinfo").read_text().splitlines()
                if l.startswith("model name")), platform.processor())
    return {"cpu": cpu, "cores": os.cpu_count(), "platform": platform.platform(),
            "python": platform.python_version()}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shrink", default="target/release/shrink-timing", help="shrink-timing binary (bench/timing)")
    ap.add_argument("--model", default="assets/models/all-MiniLM-L6-v2", help="HF model folder")
    ap.add_argument("--threads", default="1,2", help="comma-separated thread counts")
    ap.add_argument("--cases", default="forward-1x128,forward-32x128,train-16x128")
    ap.add_argument("--rounds", type=int, default=5, help="alternating rounds per case")
    ap.add_argument("--reps", type=int, help=f"repetitions per side per round (default per case: {DEFAULT_REPS})")
    ap.add_argument("--warmup", type=int, default=1, help="untimed repetitions per side per case")
    ap.add_argument("--quick", action="store_true", help="smoke run: 1 round of 1 rep (unless --reps)")
    ap.add_argument("--out-dir", default="bench/results")
    ap.add_argument("--name", default="torch_compare", help="output file stem (e.g. torch_distill for a distill-only run)")
    args = ap.parse_args()
    if args.quick:
        args.rounds, args.reps = 1, args.reps or 1
    threads = [int(x) for x in args.threads.split(",")]
    cases = [(name, *parse_case(name)) for name in args.cases.split(",")]
    if not os.access(args.shrink, os.X_OK):
        sys.exit(f"no shrink-timing binary at {args.shrink} (cargo build --release -p shrink-timing)")

    load_start = os.getloadavg()  # other jobs on the machine skew the 2-thread numbers most
    side_torch = Torch(args.model)
    results = []
    for n in threads:
        torch.set_num_threads(n)
        side_shrink = Shrink(args.shrink, args.model, n)
        try:
            for name, kind, b, t in cases:
                reps = args.reps or DEFAULT_REPS.get(name, 2)
                sides = {"shrink": side_shrink, "torch": side_torch}
                for side in sides.values():  # warm-up: allocations, caches, lazy init
                    side.run(kind, b, t, args.warmup)
                    time.sleep(PAUSE_S)
                ms = {s: [] for s in sides}
                for _ in range(args.rounds):
                    for s, side in sides.items():
                        ms[s] += side.run(kind, b, t, reps)
                        time.sleep(PAUSE_S)
                row = {"case": name, "threads": n, "shrink": summary(ms["shrink"]), "torch": summary(ms["torch"])}
                row["ratio"] = row["shrink"]["median_ms"] / row["torch"]["median_ms"]
                results.append(row)
                print(f"{name:>16} threads={n}: shrink {row['shrink']['median_ms']:9.1f} ms  "
                      f"torch {row['torch']['median_ms']:9.1f} ms  ratio {row['ratio']:.2f}", flush=True)
        finally:
            side_shrink.close()

    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    report = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "torch": torch.__version__, "transformers": transformers.__version__,
        "torch_attention": side_torch.model.config._attn_implementation,
        "torch_parallel": torch.__config__.parallel_info(),
        "loadavg_start": load_start, "loadavg_end": os.getloadavg(),
        "model": args.model, "shrink": args.shrink,
        "rounds": args.rounds, "warmup": args.warmup, "results": results,
    }
    (out / f"{args.name}.json").write_text(json.dumps(report, indent=2) + "\n")
    md = [f"# shrink vs PyTorch {torch.__version__} on all-MiniLM-L6-v2",
          "",
          f"{report['machine']['cpu']}, {report['machine']['cores']} cores; {report['date']}; "
          f"{args.rounds} interleaved rounds; median of all repetitions; load average "
          f"{report['loadavg_start'][0]:.1f} at start, {report['loadavg_end'][0]:.1f} at end (other jobs on the machine).",
          "",
          "| case | threads | shrink ms | torch ms | ratio shrink/torch |",
          "| --- | ---: | ---: | ---: | ---: |"]
    md += [f"| {r['case']} | {r['threads']} | {r['shrink']['median_ms']:.1f} | {r['torch']['median_ms']:.1f} "
           f"| {r['ratio']:.2f} |" for r in results]
    (out / f"{args.name}.md").write_text("\n".join(md) + "\n")
    print(f"wrote {out / args.name}.json and .md")


if __name__ == "__main__":
    main()
