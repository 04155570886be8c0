//! Naive references of the int8 and int4 GEMMs on the unpacked data: every level must match them bit for bit.

use super::pack::check_group;
use super::{check, Epilogue, QuantActs};

/// The K blocks of the activations' scales: (start, len) of each; one block of all K when they are per row.
fn blocks(a: &QuantActs) -> Vec<(usize, usize)> {
    let g = if a.group == 0 { a.k.max(1) } else { a.group };
    (0..a.k.div_ceil(g)).map(|b| (b * g, g.min(a.k - b * g))).collect()
}

/// Naive reference of `gemm_i8` on the unpacked data (q n x k, scale n): exact i32 sums, then the same epilogue.
/// Activations in K blocks: each block's sum scaled by its activation scale, the blocks added in order.
pub fn gemm_i8_ref(out: &mut [f32], a: &QuantActs, q: &[i8], scale: &[f32], n: usize, ep: Epilogue) {
    let k = a.k;
    check(out, a, k, n, &ep);
    if a.group > 0 {
        for i in 0..a.m {
            let row = &a.data[i * a.k_pad..];
            let y = &mut out[i * n..(i + 1) * n];
            for (j, y) in y.iter_mut().enumerate() {
                for (b, &(k0, len)) in blocks(a).iter().enumerate() {
                    let (sa, z) = a.params(i, k0);
                    let dot: i32 = (k0..k0 + len).map(|p| (row[p] as i32 - z) * q[j * k + p] as i32).sum();
                    let part = dot as f32 * (sa * scale[j]);
                    *y = if b == 0 { part } else { *y + part };
                }
            }
            ep.apply_inline(y, i, 0, n);
        }
        return;
    }
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
    assert!(a.group == 0 || a.group == group, "activation blocks of {} against int4 groups of {group}", a.group);
    if a.group > 0 {
        for i in 0..a.m {
            let row = &a.data[i * a.k_pad..];
            let y = &mut out[i * n..(i + 1) * n];
            for (j, y) in y.iter_mut().enumerate() {
                for g in 0..groups {
                    let (sa, z) = a.params(i, g * group);
                    let dot: i32 = (g * group..(g + 1) * group).map(|p| (row[p] as i32 - z) * i32::from(q[j * k + p])).sum();
                    let part = (dot as f32).mul_add(scale[j * groups + g], 0.0) * sa;
                    *y = if g == 0 { part } else { *y + part };
                }
            }
            ep.apply_inline(y, i, 0, n);
        }
        return;
    }
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
