#!/usr/bin/env python3
"""Instructions an all-MiniLM-L6-v2 forward at 1 x 128 executes on aarch64, per kernel level, counted by the
emulator: qemu-user logs every translated block (-d in_asm) and every block it runs (-d exec, nochain), so the
executed instructions are the sum over runs of each block's length. Two counts:
- the 36 int8 / int4 GEMMs alone (crates/shrink-kernels/examples/qgemm_count.rs), each shape run once and twice;
- the whole forward on the runtime (crates/shrink-runtime/examples/forward_count.rs), fp32, int8 and int4, once
  and twice.
The difference of the two runs is the work alone, start-up cancelled. No ARM hardware is here: these are
instruction counts and a throughput estimate from them, not time.

    bench/arm-instructions.py [--out bench/results/arm-instructions.json]
"""
import argparse, collections, json, os, subprocess, sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET = "aarch64-unknown-linux-gnu"
# MiniLM-L6 at 1 x 128: per layer Q, K, V, O (384 -> 384), FFN up (384 -> 1536) and down (1536 -> 384).
T, C, F, LAYERS = 128, 384, 1536, 6
SHAPES = {(T, C, C): 4, (T, C, F): 1, (T, F, C): 1}
# The levels and the qemu CPU that has each.
LEVELS = [("scalar", "max"), ("neon", "cortex-a53"), ("dotprod", "neoverse-n1"), ("i8mm", "max")]
# MACs per instruction of the int8 multiply instructions (8 lanes for a smull/smull2 half).
MAC_OPS = {"sdot": 16, "udot": 16, "usdot": 16, "sudot": 16, "smmla": 32, "ummla": 32, "usmmla": 32, "smull": 8, "smull2": 8,
           "smlal": 8, "smlal2": 8}
# f32 multiply-accumulates (4 lanes): the fp32 Linears, attention's products, int4's per-group scaling.
FLOAT_OPS = {"fmla": 4}
# qemu 7.2's disassembler prints the dot-product and matrix-multiply instructions as ".byte": name them from
# their encodings (Arm ARM, "Advanced SIMD three same (extra)" and "by element"). (mask, value, mnemonic).
ENCODINGS = [
    (0xBFE0FC00, 0x0E809400, "sdot"), (0xBFE0FC00, 0x2E809400, "udot"), (0xBFE0FC00, 0x0E809C00, "usdot"),
    (0xBFC0F400, 0x0F80E000, "sdot"), (0xBFC0F400, 0x2F80E000, "udot"),
    (0xBFC0F400, 0x0F80F000, "sudot"), (0xBFC0F400, 0x0F80F000 | 0x00800000, "usdot"),
    (0xFFE0FC00, 0x4E80A400, "smmla"), (0xFFE0FC00, 0x6E80A400, "ummla"), (0xFFE0FC00, 0x4E80AC00, "usmmla"),
]


def mnemonic(word_hex, printed):
    if printed != ".byte":
        return printed
    word = int(word_hex, 16)
    return next((name for mask, value, name in ENCODINGS if word & mask == value), ".byte")


def cross_env():
    return dict(os.environ, RUSTC="/usr/bin/rustc", CARGO_TARGET_DIR=f"{ROOT}/target/aarch64",
                CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER="aarch64-linux-gnu-gcc")


def build():
    """The two aarch64 examples: one GEMM (shrink-kernels) and one whole forward (shrink-runtime)."""
    for package, example in [("shrink-kernels", "qgemm_count"), ("shrink-runtime", "forward_count")]:
        subprocess.run(["cargo", "build", "--release", "--target", TARGET, "-p", package, "--example", example],
                       cwd=ROOT, env=cross_env(), check=True)
    out = f"{ROOT}/target/aarch64/{TARGET}/release/examples"
    return f"{out}/qgemm_count", f"{out}/forward_count"


def models():
    """MiniLM in fp32 (assets/) and quantized by the host's shrink into target/arm-bench/: int8 dynamic, int4 g32."""
    base = f"{ROOT}/assets/models/all-MiniLM-L6-v2"
    if not os.path.isdir(base):
        subprocess.run([f"{ROOT}/scripts/fetch-assets.sh"], check=True)
    subprocess.run(["cargo", "build", "--release", "-p", "shrink-cli"], cwd=ROOT, check=True)
    out = {"fp32": base}
    for name, flags in [("int8", ["--scheme", "int8-dynamic"]), ("int4", ["--scheme", "int4", "--group", "32"])]:
        out[name] = f"{ROOT}/target/arm-bench/{name}"
        if not os.path.isdir(out[name]):
            subprocess.run([f"{ROOT}/target/release/shrink", "quantize", base, *flags, "--out", out[name]], check=True)
    return out


def count(cpu, level, *program):
    """(instructions executed, Counter of mnemonics executed) for one process."""
    cmd = ["qemu-aarch64-static", "-L", "/usr/aarch64-linux-gnu", "-cpu", cpu, "-d", "in_asm,exec,nochain",
           *map(str, program)]
    env = dict(os.environ, SHRINK_ISA=level, RAYON_NUM_THREADS="1")
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, text=True, bufsize=1 << 20)
    blocks, current = {}, None  # guest pc -> mnemonics of the block translated there
    runs = collections.Counter()
    for line in p.stderr:
        if line.startswith("Trace "):
            pc = int(line.split("[", 1)[1].split("/")[1], 16)
            runs[pc] += 1
        elif line.startswith("IN:"):
            current = None
        elif line.startswith("0x"):
            addr, rest = line.split(":", 1)
            parts = rest.split()
            if len(parts) < 2:
                continue
            if current is None:
                current = blocks[int(addr, 16)] = []
            current.append(mnemonic(parts[0], parts[1]))
        elif not line.strip():
            current = None
    if p.wait() != 0:
        sys.exit(f"{' '.join(cmd)} failed")
    mix = collections.Counter()
    for pc, times in runs.items():
        for op in blocks.get(pc, ()):
            mix[op] += times
    return sum(mix.values()), mix


# The throughput model behind "expected MACs per cycle" (an estimate, not a measurement): a core that issues 4
# instructions per cycle and has two 128-bit SIMD pipes, each starting one multiply instruction (smull, sadalp, sdot,
# smmla) per cycle, as in the Cortex-A76 / Neoverse-N1 class; memory stalls and dependency chains ignored.
ISSUE_WIDTH, SIMD_PIPES = 4, 2
PIPE_OPS = set(MAC_OPS) | set(FLOAT_OPS) | {"sadalp"}


def summary(total, mix, macs, cpu, mac_ops):
    """One level's row; mac_ops are the instructions that do the counted MACs."""
    mac_instr = {op: mix[op] for op in mac_ops if mix[op] > 0}
    pipe = sum(mix[op] for op in PIPE_OPS if mix[op] > 0)
    cycles = max(total / ISSUE_WIDTH, pipe / SIMD_PIPES)
    per_mult = macs / sum(mac_instr.values()) if mac_instr else None
    return {
        "cpu": cpu,
        "instructions": total,
        "macs": macs,
        "macs_per_instruction": round(macs / total, 2),
        "multiply_instructions": mac_instr,
        "macs_per_multiply_instruction": round(per_mult, 2) if per_mult else None,
        "expected_macs_per_cycle": round(macs / cycles, 1),
        # What the pipes would do if nothing but this mix of multiply and pipe instructions ran.
        "pipe_bound_macs_per_cycle": round(SIMD_PIPES * macs / pipe, 1) if pipe else None,
        "top": dict(mix.most_common(12)),
    }


def once(cpu, level, program_1, program_2):
    """Instructions and mix of (program_2) - (program_1): the same work done twice minus once."""
    one, mix1 = count(cpu, level, *program_1)
    two, mix2 = count(cpu, level, *program_2)
    mix2.subtract(mix1)
    return two - one, mix2


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=f"{ROOT}/bench/results/arm-instructions.json")
    args = ap.parse_args()
    gemm_bin, forward_bin = build()
    folders = models()
    macs = sum(m * k * n * per_layer * LAYERS for (m, k, n), per_layer in SHAPES.items())
    # Attention's two products per layer: Q K^T and P V, T x T x C each.
    forward_macs = macs + 2 * T * T * C * LAYERS
    result = {
        "counted_by": "qemu-aarch64 7.2 -d in_asm,exec,nochain on one thread; (twice) - (once), start-up cancelled",
        "model": "expected_macs_per_cycle assumes a 4-wide core with two 128-bit SIMD pipes that each start one "
                 "multiply (smull / sadalp / sdot / smmla) per cycle; an estimate from the instruction mix, not a "
                 "measurement on ARM hardware",
        "gemms": {"what": "the 36 int8 / int4 Linears of an all-MiniLM-L6-v2 forward at 1 x 128 tokens, with their "
                          "activation quantization", "macs": macs, "levels": {}},
        "forward": {"what": "one whole all-MiniLM-L6-v2 forward at 1 x 128 (embeddings, Linears, attention, LayerNorm, "
                            "GELU), on the runtime", "macs": forward_macs, "levels": {}},
    }
    for kind in ["i8", "i4"]:
        for level, cpu in LEVELS:
            total, mix_all = 0, collections.Counter()
            for shape, per_layer in SHAPES.items():
                n, mix = once(cpu, level, [gemm_bin, kind, *shape, 1], [gemm_bin, kind, *shape, 2])
                total += n * per_layer * LAYERS
                for op, c in mix.items():
                    mix_all[op] += c * per_layer * LAYERS
            row = result["gemms"]["levels"][f"{kind}/{level}"] = summary(total, mix_all, macs, cpu, MAC_OPS)
            print(f"gemms {kind} {level:8} ({cpu:11}): {total / 1e6:8.1f} M instructions, {row['macs_per_instruction']:5.2f}"
                  f" MACs/instr, {row['multiply_instructions']}, expected {row['expected_macs_per_cycle']} MACs/cycle", flush=True)
    for name, folder in folders.items():
        # The scalar level is left out here: its GEMMs alone are counted above, and its trace takes minutes.
        for level, cpu in LEVELS[1:]:
            total, mix = once(cpu, level, [forward_bin, folder, 1, T, 1], [forward_bin, folder, 1, T, 2])
            row = result["forward"]["levels"][f"{name}/{level}"] = summary(total, mix, forward_macs, cpu, {**MAC_OPS, **FLOAT_OPS})
            print(f"forward {name} {level:8} ({cpu:11}): {total / 1e6:8.1f} M instructions, {row['multiply_instructions']}", flush=True)
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    json.dump(result, open(args.out, "w"), indent=2)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
