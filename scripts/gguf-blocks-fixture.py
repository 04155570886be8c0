#!/usr/bin/env python3
"""Writes crates/shrink-format/testdata/blocks.gguf, the reference for shrink's GGUF block decoders: for each ggml
type, 2 rows of random blocks (their f16 scales set to sane values) as NAME, and the same values dequantized by
the `gguf` package (llama.cpp's gguf-py, numpy) as NAME.expected in F32. shrink's reader must give the same f32
values for both. Needs a venv with `pip install gguf numpy`:

    python3 -m venv /tmp/gv && /tmp/gv/bin/pip install gguf numpy && /tmp/gv/bin/python scripts/gguf-blocks-fixture.py
"""
import os

import numpy as np
import gguf
from gguf import GGMLQuantizationType as T
from gguf.quants import dequantize

OUT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "crates/shrink-format/testdata/blocks.gguf")
# Byte offsets of each block's f16 scale fields (ggml-common.h): random bytes there would be NaN or huge.
F16_FIELDS = {
    T.Q4_0: [0], T.Q4_1: [0, 2], T.Q5_0: [0], T.Q5_1: [0, 2], T.Q8_0: [0],
    T.Q2_K: [80, 82], T.Q3_K: [108], T.Q4_K: [0, 2], T.Q5_K: [0, 2], T.Q6_K: [208],
}
ROWS, BLOCKS_PER_ROW = 2, 2

rng = np.random.default_rng(0)
w = gguf.GGUFWriter(OUT, "shrink-test")
for qtype, fields in F16_FIELDS.items():
    block, size = gguf.GGML_QUANT_SIZES[qtype]
    raw = rng.integers(0, 256, size=(ROWS * BLOCKS_PER_ROW, size), dtype=np.uint8)
    for at in fields:
        scale = (rng.uniform(0.001, 0.1, size=len(raw)) * rng.choice([-1, 1], size=len(raw))).astype(np.float16)
        raw[:, at:at + 2] = scale.view(np.uint8).reshape(-1, 2)
    raw = raw.reshape(ROWS, BLOCKS_PER_ROW * size)
    w.add_tensor(qtype.name, raw, raw_dtype=qtype)
    w.add_tensor(qtype.name + ".expected", dequantize(raw, qtype).astype(np.float32))
x = rng.standard_normal((ROWS, 64)).astype(np.float32)
w.add_tensor("F16", x.astype(np.float16))
w.add_tensor("F16.expected", x.astype(np.float16).astype(np.float32))
w.write_header_to_file()
w.write_kv_data_to_file()
w.write_tensors_to_file()
w.close()
print(f"wrote {OUT} ({os.path.getsize(OUT)} bytes)")
