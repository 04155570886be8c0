//! Dropout masks as a pure function of (seed, element index): fused ops regenerate them in backward instead of
//! storing them, and threads fill disjoint ranges independently.

use crate::multiversion;

#[derive(Debug, Clone, Copy)]
pub struct Mask {
    seed: u32,
    /// Drop when the element's hash falls below p * 2^32.
    threshold: u32,
    /// 1 / (1 - p): kept values are scaled so the expectation is unchanged.
    pub scale: f32,
}

/// murmur3's 32-bit finaliser: cheap, vectorisable, and mixes every input bit into every output bit.
#[inline(always)]
fn hash(seed: u32, i: u32) -> u32 {
    let mut h = seed ^ i.wrapping_mul(0x9e37_79b9);
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^ (h >> 16)
}

impl Mask {
    /// Drop probability `p` in [0, 1).
    pub fn new(p: f32, seed: u64) -> Self {
        assert!((0.0..1.0).contains(&p), "dropout probability {p} outside [0, 1)");
        let seed = (seed ^ (seed >> 32)) as u32;
        Self { seed, threshold: (p as f64 * 4_294_967_296.0) as u32, scale: 1.0 / (1.0 - p) }
    }

    /// The multiplier of element `i`: 0 or 1 / (1 - p). The reference for `fill`.
    pub fn factor(&self, i: usize) -> f32 {
        if hash(self.seed, i as u32) < self.threshold { 0.0 } else { self.scale }
    }

    /// out[j] = factor(start + j).
    pub fn fill(&self, start: usize, out: &mut [f32]) {
        fill_mask(self.seed, self.threshold, self.scale, start as u32, out)
    }

    /// x[j] *= factor(start + j).
    pub fn apply(&self, start: usize, x: &mut [f32]) {
        apply_mask(self.seed, self.threshold, self.scale, start as u32, x)
    }
}

multiversion!(
    pub fill_mask, fill_mask_on; (seed: u32, threshold: u32, scale: f32, start: u32, out: &mut [f32]) {
        for (j, o) in out.iter_mut().enumerate() {
            *o = if hash(seed, start.wrapping_add(j as u32)) < threshold { 0.0 } else { scale };
        }
    }
);

multiversion!(
    pub apply_mask, apply_mask_on; (seed: u32, threshold: u32, scale: f32, start: u32, x: &mut [f32]) {
        for (j, v) in x.iter_mut().enumerate() {
            *v *= if hash(seed, start.wrapping_add(j as u32)) < threshold { 0.0 } else { scale };
        }
    }
);

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::ops::Ops;

    /// One level's fill and apply give the reference mask (`Mask::factor`) exactly; the mask keeps 1 - p.
    pub(crate) fn matches_reference(ops: &Ops) {
        let isa = ops.isa;
        let m = Mask::new(0.1, 42);
        let n = 100_003;
        let want: Vec<f32> = (0..n).map(|i| m.factor(i + 17)).collect();
        let kept = want.iter().filter(|&&v| v > 0.0).count() as f64 / n as f64;
        assert!((kept - 0.9).abs() < 0.005, "kept {kept}");
        let mut got = vec![0.0; n];
        fill_mask_on(ops, m.seed, m.threshold, m.scale, 17, &mut got);
        assert_eq!(got, want, "{isa:?}");
        let mut ones = vec![2.0; n];
        apply_mask_on(ops, m.seed, m.threshold, m.scale, 17, &mut ones);
        assert!(ones.iter().zip(&want).all(|(a, w)| *a == 2.0 * w), "{isa:?}");
        assert_ne!(want, (0..n).map(|i| Mask::new(0.1, 43).factor(i + 17)).collect::<Vec<_>>());
    }
}
