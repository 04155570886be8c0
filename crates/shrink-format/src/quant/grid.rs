//! The symmetric integer grids weights are rounded onto, and round-to-nearest on them: the reference encode of the
//! int8 and int4 weight formats (`int8.rs`, `int4.rs`), which GPTQ's error-compensated rounding shares its scale
//! and rounding rules with.


/// The symmetric integer grid the weights are rounded onto.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Grid {
    /// One scale per output row: q in [-max_q, max_q] (int8: max_q = 127).
    PerChannel { max_q: i32 },
    /// One scale per (row, group of `group` consecutive k): int4: max_q = 7, group 32/64/128; k % group == 0.
    Groups { max_q: i32, group: usize },
}

impl Grid {
    /// The largest |q|.
    pub fn max_q(&self) -> i32 {
        match *self {
            Grid::PerChannel { max_q } | Grid::Groups { max_q, .. } => max_q,
        }
    }

    /// Scales per output row for k inputs (the second dimension of `Quantized::scale`).
    pub fn groups(&self, k: usize) -> usize {
        k / self.group_len(k)
    }

    /// Consecutive inputs sharing one scale: all k for PerChannel.
    pub fn group_len(&self, k: usize) -> usize {
        match *self {
            Grid::PerChannel { .. } => k,
            Grid::Groups { group, .. } => group,
        }
    }

    pub fn check(&self, k: usize) -> Result<(), String> {
        let max_q = self.max_q();
        if !(1..=127).contains(&max_q) {
            return Err(format!("{self:?}: max_q must be in 1..=127 to fit i8"));
        }
        if let Grid::Groups { group, .. } = *self {
            if group == 0 || !k.is_multiple_of(group) {
                return Err(format!("{self:?}: the group must be positive and divide k = {k}"));
            }
        }
        Ok(())
    }
}

/// A quantized weight in storage form: what the runtime loads.
#[derive(Clone, Debug)]
pub struct Quantized {
    /// n x k, each in [-max_q, max_q], in the original column order.
    pub q: Vec<i8>,
    /// n x groups (groups = 1 for PerChannel): w ≈ scale * q.
    pub scale: Vec<f32>,
}

impl Quantized {
    pub fn dequantize(&self, n: usize, k: usize, grid: &Grid) -> Vec<f32> {
        grid.check(k).unwrap_or_else(|e| panic!("dequantize: {e}"));
        let (g, groups) = (grid.group_len(k), grid.groups(k));
        assert_eq!(self.q.len(), n * k, "dequantize: q has {} values, {n}x{k} needs {}", self.q.len(), n * k);
        assert_eq!(self.scale.len(), n * groups, "dequantize: {} scales, {n}x{groups} needed", self.scale.len());
        let mut w = vec![0f32; n * k];
        for ((w, q), s) in w.chunks_exact_mut(k).zip(self.q.chunks_exact(k)).zip(self.scale.chunks_exact(groups)) {
            for (c, (w, &q)) in w.iter_mut().zip(q).enumerate() {
                *w = s[c / g] * f32::from(q);
            }
        }
        w
    }
}

/// s = round_scale(amax / max_q); zero when amax is zero, or when round_scale sends it to zero or out of range
/// (f16 underflow), so the (row, group) quantizes to 0 rather than to garbage.
pub fn scale_of(amax: f32, max_q: i32, round_scale: &dyn Fn(f32) -> f32) -> f32 {
    if amax == 0.0 {
        return 0.0;
    }
    let s = round_scale(amax / max_q as f32);
    if s > 0.0 && s.is_finite() {
        s
    } else {
        0.0
    }
}

/// Rounds to the grid; q is clamped because round_scale may return a scale slightly below amax / max_q.
pub fn round_q(x: f64, s: f64, max_q: f64) -> f64 {
    if s > 0.0 {
        (x / s).round().clamp(-max_q, max_q)
    } else {
        0.0
    }
}

/// Round-to-nearest on the same grid: the baseline GPTQ must beat.
pub fn rtn(w: &[f32], n: usize, k: usize, grid: &Grid, round_scale: &dyn Fn(f32) -> f32) -> Quantized {
    assert_eq!(w.len(), n * k, "rtn: weight has {} values, {n}x{k} needs {}", w.len(), n * k);
    grid.check(k).unwrap_or_else(|e| panic!("rtn: {e}"));
    assert!(w.iter().all(|v| v.is_finite()), "rtn: the weight has non-finite values");
    let (g, groups, max_q) = (grid.group_len(k), grid.groups(k), grid.max_q());
    let mut q = vec![0i8; n * k];
    let mut scale = vec![0f32; n * groups];
    for ((w, q), s) in w.chunks_exact(g).zip(q.chunks_exact_mut(g)).zip(&mut scale) {
        *s = scale_of(w.iter().fold(0f32, |a, v| a.max(v.abs())), max_q, round_scale);
        for (q, &w) in q.iter_mut().zip(w) {
            *q = round_q(f64::from(w), f64::from(*s), f64::from(max_q)) as i8;
        }
    }
    Quantized { q, scale }
}

/// f16-representable scales, so an F16 scale tensor stores exactly what the rounding used.
pub fn f16_round(s: f32) -> f32 {
    half::f16::from_f32(s).to_f32()
}

/// Scales stored F32: kept as computed.
pub fn unrounded(s: f32) -> f32 {
    s
}

/// How scales on `grid` are rounded before use: int4 group scales are stored F16, int8 channel scales F32.
pub fn scale_rounding(grid: &Grid) -> fn(f32) -> f32 {
    match grid {
        Grid::Groups { .. } => f16_round,
        Grid::PerChannel { .. } => unrounded,
    }
}
