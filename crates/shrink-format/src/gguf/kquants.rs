//! ggml's K-quants: super-blocks of 256 values in 16 or 8 sub-blocks, each with its own scale (and minimum) stored
//! in a few bits under one or two f16 super-block factors (`ggml-common.h`, `dequantize_row_q*_K`). Read-only:
//! shrink decodes them from llama.cpp files and writes its own formats.

use half::f16;

/// Values per super-block (ggml's QK_K).
pub const QK_K: usize = 256;

fn f16_at(b: &[u8]) -> f32 {
    f16::from_le_bytes([b[0], b[1]]).to_f32()
}

/// Sub-block j's 6-bit (scale, min) of Q4_K and Q5_K, packed 8 pairs into 12 bytes (ggml `get_scale_min_k4`).
fn scale_min(j: usize, q: &[u8; 12]) -> (f32, f32) {
    let (d, m) = if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        ((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4), (q[j + 4] >> 4) | ((q[j] >> 6) << 4))
    };
    (d as f32, m as f32)
}

/// Sub-blocks 2i and 2i + 1 of Q4_K / Q5_K: (d sc, dmin m) of each.
fn pair_scales(i: usize, d: f32, dmin: f32, q: &[u8; 12]) -> [(f32, f32); 2] {
    [2 * i, 2 * i + 1].map(|j| {
        let (sc, m) = scale_min(j, q);
        (d * sc, dmin * m)
    })
}

/// Q2_K: 16 sub-blocks of 16, 2-bit values, 4-bit scale and min per sub-block: x = d sc q - dmin m.
#[repr(C)]
pub struct BlockQ2K {
    pub scales: [u8; QK_K / 16],
    pub qs: [u8; QK_K / 4],
    pub d: f16,
    pub dmin: f16,
}
const _: () = assert!(std::mem::size_of::<BlockQ2K>() == 84);

impl BlockQ2K {
    pub const BYTES: usize = 84;

    pub fn decode(b: &[u8], y: &mut [f32]) {
        let (scales, qs, d, dmin) = (&b[..16], &b[16..80], f16_at(&b[80..]), f16_at(&b[82..]));
        let mut out = y.iter_mut();
        for (half, q) in qs.chunks_exact(32).enumerate() {
            for j in 0..4 {
                for (s, lanes) in [(0, 0..16), (1, 16..32)] {
                    let sc = scales[8 * half + 2 * j + s];
                    let (dl, ml) = (d * (sc & 0xF) as f32, dmin * (sc >> 4) as f32);
                    for l in lanes {
                        *out.next().unwrap() = dl * ((q[l] >> (2 * j)) & 3) as f32 - ml;
                    }
                }
            }
        }
    }
}

/// Q3_K: 16 sub-blocks of 16, 3-bit values (2 low bits in qs, the high bit in hmask, set = no -4), signed 6-bit
/// scales: x = d (sc - 32) q.
#[repr(C)]
pub struct BlockQ3K {
    pub hmask: [u8; QK_K / 8],
    pub qs: [u8; QK_K / 4],
    pub scales: [u8; 12],
    pub d: f16,
}
const _: () = assert!(std::mem::size_of::<BlockQ3K>() == 110);

impl BlockQ3K {
    pub const BYTES: usize = 110;

    /// The 16 scales: low 4 bits from bytes 0..8 (two per byte), high 2 bits from bytes 8..12.
    fn scales(s: &[u8]) -> [i32; 16] {
        std::array::from_fn(|i| {
            let low = if i < 8 { s[i] & 0xF } else { s[i - 8] >> 4 };
            let high = (s[8 + i % 4] >> (2 * (i / 4))) & 3;
            (low | high << 4) as i32 - 32
        })
    }

    pub fn decode(b: &[u8], y: &mut [f32]) {
        let (hmask, qs, d) = (&b[..32], &b[32..96], f16_at(&b[108..]));
        let scales = Self::scales(&b[96..108]);
        let mut out = y.iter_mut();
        let mut m = 1u8;
        for (half, q) in qs.chunks_exact(32).enumerate() {
            for j in 0..4 {
                for (s, lanes) in [(0, 0..16), (1, 16..32)] {
                    let dl = d * scales[8 * half + 2 * j + s] as f32;
                    for l in lanes {
                        let v = ((q[l] >> (2 * j)) & 3) as i32 - if hmask[l] & m != 0 { 0 } else { 4 };
                        *out.next().unwrap() = dl * v as f32;
                    }
                }
                m <<= 1;
            }
        }
    }
}

/// Q4_K: 8 sub-blocks of 32, 4-bit values, 6-bit scale and min each: x = d sc q - dmin m.
#[repr(C)]
pub struct BlockQ4K {
    pub d: f16,
    pub dmin: f16,
    pub scales: [u8; 12],
    pub qs: [u8; QK_K / 2],
}
const _: () = assert!(std::mem::size_of::<BlockQ4K>() == 144);

impl BlockQ4K {
    pub const BYTES: usize = 144;

    pub fn decode(b: &[u8], y: &mut [f32]) {
        let (d, dmin, scales, qs) = (f16_at(b), f16_at(&b[2..]), b[4..16].try_into().unwrap(), &b[16..144]);
        for (i, (q, y)) in qs.chunks_exact(32).zip(y.chunks_exact_mut(64)).enumerate() {
            let [(d1, m1), (d2, m2)] = pair_scales(i, d, dmin, scales);
            for l in 0..32 {
                y[l] = d1 * (q[l] & 0xF) as f32 - m1;
                y[l + 32] = d2 * (q[l] >> 4) as f32 - m2;
            }
        }
    }
}

/// Q5_K: Q4_K plus a fifth bit per value in qh: x = d sc q - dmin m.
#[repr(C)]
pub struct BlockQ5K {
    pub d: f16,
    pub dmin: f16,
    pub scales: [u8; 12],
    pub qh: [u8; QK_K / 8],
    pub qs: [u8; QK_K / 2],
}
const _: () = assert!(std::mem::size_of::<BlockQ5K>() == 176);

impl BlockQ5K {
    pub const BYTES: usize = 176;

    pub fn decode(b: &[u8], y: &mut [f32]) {
        let (d, dmin, scales) = (f16_at(b), f16_at(&b[2..]), b[4..16].try_into().unwrap());
        let (qh, qs) = (&b[16..48], &b[48..176]);
        for (i, (q, y)) in qs.chunks_exact(32).zip(y.chunks_exact_mut(64)).enumerate() {
            let [(d1, m1), (d2, m2)] = pair_scales(i, d, dmin, scales);
            let (u1, u2) = (1u8 << (2 * i), 2u8 << (2 * i));
            for l in 0..32 {
                let high = |u: u8| if qh[l] & u != 0 { 16 } else { 0 };
                y[l] = d1 * ((q[l] & 0xF) + high(u1)) as f32 - m1;
                y[l + 32] = d2 * ((q[l] >> 4) + high(u2)) as f32 - m2;
            }
        }
    }
}

/// Q6_K: 16 sub-blocks of 16, 6-bit values (4 low bits in ql, 2 high in qh), signed 8-bit scales:
/// x = d sc (q - 32).
#[repr(C)]
pub struct BlockQ6K {
    pub ql: [u8; QK_K / 2],
    pub qh: [u8; QK_K / 4],
    pub scales: [i8; QK_K / 16],
    pub d: f16,
}
const _: () = assert!(std::mem::size_of::<BlockQ6K>() == 210);

impl BlockQ6K {
    pub const BYTES: usize = 210;

    pub fn decode(b: &[u8], y: &mut [f32]) {
        let d = f16_at(&b[208..]);
        for (n, y) in y.chunks_exact_mut(128).enumerate() {
            let (ql, qh, sc) = (&b[64 * n..64 * n + 64], &b[128 + 32 * n..128 + 32 * n + 32], &b[192 + 8 * n..200 + 8 * n]);
            for l in 0..32 {
                let is = l / 16;
                let q = |low: u8, shift: u32| ((low | ((qh[l] >> shift) & 3) << 4) as i32 - 32) as f32;
                let s = |k: usize| d * sc[is + k] as i8 as f32;
                y[l] = s(0) * q(ql[l] & 0xF, 0);
                y[l + 32] = s(2) * q(ql[l + 32] & 0xF, 2);
                y[l + 64] = s(4) * q(ql[l] >> 4, 4);
                y[l + 96] = s(6) * q(ql[l + 32] >> 4, 6);
            }
        }
    }
}
