//! Naive references of the int8 and int4 GEMMs on the unpacked data: every level must match them bit for bit.

use super::pack::check_group;
use super::{check, Epilogue, QuantActs};

/// Naive reference of `gemm_i8` on the unpacked data (q n x k, scale n): exact i32 sums, then the same epilogue.
pub fn gemm_i8_ref(out: &mut [f32], a: &QuantActs, q: &[i8], scale: &[f32], n: usize, ep: Epilogue) {
    let k = a.k;
    check(out, a, k, n, &ep);
    for i in 0..a.m {
        let (row, z, sa) = (&a.data[i * a.k_pad..i * a.k_pad + k], a.zero[i], a.scale[i]);
        let y = &mut out[i * n..(i + 1) * n];
        for (j, y) in y.iter_mut().enumerate() {
            let dot: i32 = row.iter().zip(&q[j * k..(j + 1) * k]).map(|(&x, &w)| (x as i32 - z) * w as i32).sum();
            *y = dot as f32 * (sa * scale[j]);
        }
        ep.apply_inline(y, i, 0, n);
    }
}

/// Naive reference of `gemm_i4` on the unpacked data (q n x k in [-7, 7], scale n x k/group).
pub fn gemm_i4_ref(out: &mut [f32], a: &QuantActs, q: &[i8], scale: &[f32], n: usize, group: usize, ep: Epilogue) {
    let k = a.k;
    check_group(k, group);
    check(out, a, k, n, &ep);
    let groups = k / group;
    for i in 0..a.m {
        let (row, z, sa) = (&a.data[i * a.k_pad..], a.zero[i], a.scale[i]);
        let y = &mut out[i * n..(i + 1) * n];
        for (j, y) in y.iter_mut().enumerate() {
            let wrow = &q[j * k..(j + 1) * k];
            let mut acc = 0f32;
            for g in 0..groups {
                let dot: i32 = (g * group..(g + 1) * group).map(|p| (row[p] as i32 - z) * i32::from(wrow[p])).sum();
                acc = (dot as f32).mul_add(scale[j * groups + g], acc);
            }
            *y = acc * sa;
        }
        ep.apply_inline(y, i, 0, n);
    }
}
