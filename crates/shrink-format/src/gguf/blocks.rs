//! ggml's tensor types as GGUF stores them: one plain block struct per 32-value type (its byte size asserted), one
//! reference decode each (and encode for the types shrink will write: Q8_0, Q4_0, Q4_1), and `TYPES`, the table a
//! type id is looked up in (the 256-value K-quants are in kquants.rs). Layouts from ggml's `ggml-common.h`: a
//! block holds consecutive values of a row.

use half::{bf16, f16};

use super::kquants::{BlockQ2K, BlockQ3K, BlockQ4K, BlockQ5K, BlockQ6K, QK_K};

/// One row of the table: a ggml type id, its name, values per block, bytes per block, and its decode.
pub struct TypeInfo {
    pub id: u32,
    pub name: &'static str,
    pub block_elems: usize,
    pub block_bytes: usize,
    /// Decodes one block: `block_bytes` bytes into `block_elems` values.
    pub decode_block: fn(bytes: &[u8], out: &mut [f32]),
}

impl TypeInfo {
    /// Decodes whole blocks: `bytes.len()` a multiple of `block_bytes`, `out.len()` the matching value count.
    pub fn decode(&self, bytes: &[u8], out: &mut [f32]) {
        for (b, o) in bytes.chunks_exact(self.block_bytes).zip(out.chunks_exact_mut(self.block_elems)) {
            (self.decode_block)(b, o);
        }
    }
}

impl std::fmt::Debug for TypeInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name)
    }
}

impl PartialEq for TypeInfo {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id
    }
}

const fn row(id: u32, name: &'static str, block_elems: usize, block_bytes: usize, decode_block: fn(&[u8], &mut [f32])) -> TypeInfo {
    TypeInfo { id, name, block_elems, block_bytes, decode_block }
}

/// The types shrink reads. Not here: Q8_1 and Q8_K (llama.cpp's activation formats, not stored in model files) and
/// the IQ / TQ types; a file using them is refused by name.
pub const TYPES: &[TypeInfo] = &[
    row(0, "F32", 1, 4, |b, o| o[0] = f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
    row(1, "F16", 1, 2, |b, o| o[0] = f16_at(b)),
    row(2, "Q4_0", QK, BlockQ4_0::BYTES, |b, o| BlockQ4_0::from_bytes(b).decode(o)),
    row(3, "Q4_1", QK, BlockQ4_1::BYTES, |b, o| BlockQ4_1::from_bytes(b).decode(o)),
    row(6, "Q5_0", QK, Q5_0_BYTES, decode_q5_0),
    row(7, "Q5_1", QK, Q5_1_BYTES, decode_q5_1),
    row(8, "Q8_0", QK, BlockQ8_0::BYTES, |b, o| BlockQ8_0::from_bytes(b).decode(o)),
    row(10, "Q2_K", QK_K, BlockQ2K::BYTES, BlockQ2K::decode),
    row(11, "Q3_K", QK_K, BlockQ3K::BYTES, BlockQ3K::decode),
    row(12, "Q4_K", QK_K, BlockQ4K::BYTES, BlockQ4K::decode),
    row(13, "Q5_K", QK_K, BlockQ5K::BYTES, BlockQ5K::decode),
    row(14, "Q6_K", QK_K, BlockQ6K::BYTES, BlockQ6K::decode),
    row(30, "BF16", 1, 2, |b, o| o[0] = bf16::from_le_bytes([b[0], b[1]]).to_f32()),
];

/// Names of the ggml type ids shrink does not read, for the error that refuses them.
pub const UNSUPPORTED: &[(u32, &str)] = &[
    (9, "Q8_1"),
    (15, "Q8_K"),
    (16, "IQ2_XXS"),
    (17, "IQ2_XS"),
    (18, "IQ3_XXS"),
    (19, "IQ1_S"),
    (20, "IQ4_NL"),
    (21, "IQ3_S"),
    (22, "IQ2_S"),
    (23, "IQ4_XS"),
    (29, "IQ1_M"),
    (34, "TQ1_0"),
    (35, "TQ2_0"),
];

pub fn type_info(id: u32) -> Option<&'static TypeInfo> {
    TYPES.iter().find(|t| t.id == id)
}

/// The values per block every quantized type here shares (ggml's QK4_0 = QK4_1 = QK8_0).
const QK: usize = 32;

fn f16_at(b: &[u8]) -> f32 {
    f16::from_le_bytes([b[0], b[1]]).to_f32()
}

/// Q8_0: 32 values x = d q, q in [-127, 127], d the block's max |x| / 127 in f16.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BlockQ8_0 {
    pub d: f16,
    pub qs: [i8; QK],
}
const _: () = assert!(std::mem::size_of::<BlockQ8_0>() == 2 + QK);

impl BlockQ8_0 {
    pub const ELEMS: usize = QK;
    pub const BYTES: usize = 2 + QK;

    pub fn from_bytes(b: &[u8]) -> Self {
        Self { d: f16::from_le_bytes([b[0], b[1]]), qs: std::array::from_fn(|i| b[2 + i] as i8) }
    }

    pub fn to_bytes(&self) -> [u8; Self::BYTES] {
        let mut b = [0u8; Self::BYTES];
        b[..2].copy_from_slice(&self.d.to_le_bytes());
        b[2..].iter_mut().zip(&self.qs).for_each(|(o, &q)| *o = q as u8);
        b
    }

    pub fn encode(x: &[f32; QK]) -> Self {
        let amax = x.iter().fold(0f32, |a, v| a.max(v.abs()));
        let d = amax / 127.0;
        let inv = if d > 0.0 { 1.0 / d } else { 0.0 };
        Self { d: f16::from_f32(d), qs: std::array::from_fn(|i| (x[i] * inv).round() as i8) }
    }

    pub fn decode(&self, out: &mut [f32]) {
        let d = self.d.to_f32();
        out.iter_mut().zip(&self.qs).for_each(|(o, &q)| *o = q as f32 * d);
    }
}

/// The nibbles of Q4_0 and Q4_1: value j < 16 in the low half of byte j, value j + 16 in its high half.
fn nibble(qs: &[u8; QK / 2], j: usize) -> u8 {
    if j < QK / 2 {
        qs[j] & 0xF
    } else {
        qs[j - QK / 2] >> 4
    }
}

fn pack_nibbles(q: impl Fn(usize) -> u8) -> [u8; QK / 2] {
    std::array::from_fn(|j| q(j) | q(j + QK / 2) << 4)
}

/// Q4_0: 32 values x = d (q - 8), q in [0, 15], d = (the value of largest |x|) / -8 in f16.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BlockQ4_0 {
    pub d: f16,
    pub qs: [u8; QK / 2],
}
const _: () = assert!(std::mem::size_of::<BlockQ4_0>() == 2 + QK / 2);

impl BlockQ4_0 {
    pub const ELEMS: usize = QK;
    pub const BYTES: usize = 2 + QK / 2;

    pub fn from_bytes(b: &[u8]) -> Self {
        Self { d: f16::from_le_bytes([b[0], b[1]]), qs: std::array::from_fn(|i| b[2 + i]) }
    }

    pub fn to_bytes(&self) -> [u8; Self::BYTES] {
        let mut b = [0u8; Self::BYTES];
        b[..2].copy_from_slice(&self.d.to_le_bytes());
        b[2..].copy_from_slice(&self.qs);
        b
    }

    /// ggml's rounding: the signed extreme maps to -8, so the grid's extra negative step is used.
    pub fn encode(x: &[f32; QK]) -> Self {
        let max = x.iter().copied().fold(0f32, |m, v| if v.abs() > m.abs() { v } else { m });
        let d = max / -8.0;
        let inv = if d != 0.0 { 1.0 / d } else { 0.0 };
        Self { d: f16::from_f32(d), qs: pack_nibbles(|j| ((x[j] * inv + 8.5) as i32).clamp(0, 15) as u8) }
    }

    pub fn decode(&self, out: &mut [f32]) {
        let d = self.d.to_f32();
        out.iter_mut().enumerate().for_each(|(j, o)| *o = (nibble(&self.qs, j) as f32 - 8.0) * d);
    }
}

/// Q4_1: 32 values x = d q + m, q in [0, 15], m the block's minimum and d its range / 15, both f16.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BlockQ4_1 {
    pub d: f16,
    pub m: f16,
    pub qs: [u8; QK / 2],
}
const _: () = assert!(std::mem::size_of::<BlockQ4_1>() == 4 + QK / 2);

impl BlockQ4_1 {
    pub const ELEMS: usize = QK;
    pub const BYTES: usize = 4 + QK / 2;

    pub fn from_bytes(b: &[u8]) -> Self {
        Self { d: f16::from_le_bytes([b[0], b[1]]), m: f16::from_le_bytes([b[2], b[3]]), qs: std::array::from_fn(|i| b[4 + i]) }
    }

    pub fn to_bytes(&self) -> [u8; Self::BYTES] {
        let mut b = [0u8; Self::BYTES];
        b[..2].copy_from_slice(&self.d.to_le_bytes());
        b[2..4].copy_from_slice(&self.m.to_le_bytes());
        b[4..].copy_from_slice(&self.qs);
        b
    }

    pub fn encode(x: &[f32; QK]) -> Self {
        let (min, max) = x.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| (lo.min(v), hi.max(v)));
        let d = (max - min) / 15.0;
        let inv = if d != 0.0 { 1.0 / d } else { 0.0 };
        let qs = pack_nibbles(|j| (((x[j] - min) * inv + 0.5) as i32).clamp(0, 15) as u8);
        Self { d: f16::from_f32(d), m: f16::from_f32(min), qs }
    }

    pub fn decode(&self, out: &mut [f32]) {
        let (d, m) = (self.d.to_f32(), self.m.to_f32());
        out.iter_mut().enumerate().for_each(|(j, o)| *o = nibble(&self.qs, j) as f32 * d + m);
    }
}

const Q5_0_BYTES: usize = 2 + 4 + QK / 2;
const Q5_1_BYTES: usize = 4 + 4 + QK / 2;

/// The 5-bit values of Q5_0 / Q5_1: the Q4 nibbles plus bit j of the u32 `qh` as bit 4 of value j.
fn q5_values(qh: &[u8], qs: &[u8]) -> [u8; QK] {
    let qh = u32::from_le_bytes([qh[0], qh[1], qh[2], qh[3]]);
    let qs: &[u8; QK / 2] = qs.try_into().expect("16 nibble bytes");
    std::array::from_fn(|j| nibble(qs, j) | (((qh >> j) & 1) as u8) << 4)
}

/// Q5_0 (d f16, qh u32, 16 nibble bytes): x = d (q - 16).
fn decode_q5_0(b: &[u8], out: &mut [f32]) {
    let d = f16_at(b);
    let q = q5_values(&b[2..6], &b[6..22]);
    out.iter_mut().zip(q).for_each(|(o, q)| *o = (q as f32 - 16.0) * d);
}

/// Q5_1 (d f16, m f16, qh u32, 16 nibble bytes): x = d q + m.
fn decode_q5_1(b: &[u8], out: &mut [f32]) {
    let (d, m) = (f16_at(b), f16_at(&b[2..]));
    let q = q5_values(&b[4..8], &b[8..24]);
    out.iter_mut().zip(q).for_each(|(o, q)| *o = q as f32 * d + m);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(seed: u32) -> [f32; QK] {
        std::array::from_fn(|i| ((((i as u32).wrapping_mul(2654435761) ^ seed) % 1000) as f32 / 250.0 - 2.0) * if i == 5 { 3.0 } else { 1.0 })
    }

    /// Each quantized type: bytes round-trip exactly, and decode(encode(x)) stays within half a step (plus the
    /// f16 rounding of the scale) of x.
    #[test]
    fn encode_decode_within_half_a_step() {
        for seed in 0..20 {
            let x = block(seed);
            let mut y = [0f32; QK];
            let q8 = BlockQ8_0::encode(&x);
            assert_eq!(BlockQ8_0::from_bytes(&q8.to_bytes()), q8);
            q8.decode(&mut y);
            let step = q8.d.to_f32();
            assert!(x.iter().zip(&y).all(|(a, b)| (a - b).abs() <= 0.5 * step + 2e-3 * a.abs()), "Q8_0 seed {seed}");
            let q40 = BlockQ4_0::encode(&x);
            assert_eq!(BlockQ4_0::from_bytes(&q40.to_bytes()), q40);
            q40.decode(&mut y);
            let step = q40.d.to_f32().abs();
            assert!(x.iter().zip(&y).all(|(a, b)| (a - b).abs() <= 0.5 * step + 2e-3 * a.abs()), "Q4_0 seed {seed}");
            let q41 = BlockQ4_1::encode(&x);
            assert_eq!(BlockQ4_1::from_bytes(&q41.to_bytes()), q41);
            q41.decode(&mut y);
            let step = q41.d.to_f32();
            assert!(x.iter().zip(&y).all(|(a, b)| (a - b).abs() <= 0.5 * step + 4e-3 * (a.abs() + 2.0)), "Q4_1 seed {seed}");
        }
    }

    /// The layouts written out by hand: Q4_0 byte 0 holds value 0 (low) and value 16 (high).
    #[test]
    fn nibble_order_and_offsets() {
        let mut b = [0u8; BlockQ4_0::BYTES];
        b[..2].copy_from_slice(&f16::from_f32(0.5).to_le_bytes());
        b[2] = 0xF1; // value 0: 1 - 8 = -7; value 16: 15 - 8 = 7
        let mut y = [0f32; QK];
        BlockQ4_0::from_bytes(&b).decode(&mut y);
        assert_eq!((y[0], y[16], y[1]), (-3.5, 3.5, -4.0));
        let mut b = [0u8; BlockQ4_1::BYTES];
        b[..2].copy_from_slice(&f16::from_f32(0.25).to_le_bytes());
        b[2..4].copy_from_slice(&f16::from_f32(-1.0).to_le_bytes());
        b[4 + 3] = 0x2F; // value 3: 15 * 0.25 - 1; value 19: 2 * 0.25 - 1
        BlockQ4_1::from_bytes(&b).decode(&mut y);
        assert_eq!((y[3], y[19], y[0]), (2.75, -0.5, -1.0));
        let table: Vec<_> = TYPES.iter().map(|t| (t.name, t.block_elems, t.block_bytes)).collect();
        assert!(table.contains(&("Q8_0", 32, 34)) && table.contains(&("Q4_1", 32, 20)) && table.contains(&("Q4_0", 32, 18)));
    }
}
