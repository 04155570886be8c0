//! f32 GEMM through the `gemm` crate (AVX-512/AVX2 microkernels, rayon threads), on strided views so transposes
//! cost nothing. `matmul_ref` is the naive reference.

/// An m x n matrix inside a slice: element (i, j) at `i * rs + j * cs`.
#[derive(Clone, Copy)]
pub struct Mat<'a> {
    pub data: &'a [f32],
    pub rows: usize,
    pub cols: usize,
    rs: usize,
    cs: usize,
}

impl<'a> Mat<'a> {
    pub fn row_major(data: &'a [f32], rows: usize, cols: usize) -> Self {
        assert!(data.len() >= rows * cols, "matrix {rows}x{cols} needs {} values, has {}", rows * cols, data.len());
        Self { data, rows, cols, rs: cols, cs: 1 }
    }

    /// The transpose, as a view.
    pub fn t(self) -> Self {
        Self { data: self.data, rows: self.cols, cols: self.rows, rs: self.cs, cs: self.rs }
    }

    fn at(&self, i: usize, j: usize) -> f32 {
        self.data[i * self.rs + j * self.cs]
    }
}

/// c (m x n, row-major) = a (m x k) * b (k x n), plus the old c when `accumulate`; on all rayon threads.
pub fn matmul(c: &mut [f32], a: Mat, b: Mat, accumulate: bool) {
    matmul_on(c, a, b, accumulate, rayon::current_num_threads())
}

/// `matmul` on the calling thread only: for many small products that are already spread over threads.
pub fn matmul_serial(c: &mut [f32], a: Mat, b: Mat, accumulate: bool) {
    matmul_on(c, a, b, accumulate, 1)
}

fn matmul_on(c: &mut [f32], a: Mat, b: Mat, accumulate: bool, threads: usize) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    assert_eq!(b.rows, k, "inner dimensions differ");
    assert!(c.len() >= m * n, "output too small");
    if m == 0 || n == 0 {
        return;
    }
    let par = if threads > 1 { gemm::Parallelism::Rayon(threads) } else { gemm::Parallelism::None };
    // SAFETY: the views were bounds-checked at construction, c holds m x n, and no slice aliases c.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            a.data.as_ptr(),
            a.cs as isize,
            a.rs as isize,
            b.data.as_ptr(),
            b.cs as isize,
            b.rs as isize,
            if accumulate { 1.0 } else { 0.0 },
            1.0,
            false,
            false,
            false,
            par,
        )
    }
}

/// Naive reference of `matmul`.
pub fn matmul_ref(c: &mut [f32], a: Mat, b: Mat, accumulate: bool) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    for i in 0..m {
        for j in 0..n {
            let dot: f32 = (0..k).map(|p| a.at(i, p) * b.at(p, j)).sum();
            c[i * n + j] = if accumulate { c[i * n + j] + dot } else { dot };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Relative to sqrt(k) * max|a| * max|b|: different summation orders in f32.
    const GEMM_REL_TOL: f32 = 1e-5;

    fn pseudo_random(n: usize, seed: u32) -> Vec<f32> {
        let mut s = seed.wrapping_mul(2_654_435_761).max(1);
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                (s % 2001) as f32 / 1000.0 - 1.0
            })
            .collect()
    }

    #[test]
    fn matches_reference_on_awkward_shapes_and_transposes() {
        for (m, k, n) in [(1, 1, 1), (1, 384, 7), (3, 5, 1), (17, 33, 65), (64, 130, 31), (129, 64, 96)] {
            let a = pseudo_random(m * k, 1);
            let b = pseudo_random(k * n, 2);
            for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
                let av = if ta { Mat::row_major(&a, k, m).t() } else { Mat::row_major(&a, m, k) };
                let bv = if tb { Mat::row_major(&b, n, k).t() } else { Mat::row_major(&b, k, n) };
                for accumulate in [false, true] {
                    let init = pseudo_random(m * n, 3);
                    let (mut got, mut want) = (init.clone(), init.clone());
                    matmul(&mut got, av, bv, accumulate);
                    let mut serial = init.clone();
                    matmul_serial(&mut serial, av, bv, accumulate);
                    assert_eq!(got, serial);
                    matmul_ref(&mut want, av, bv, accumulate);
                    let tol = GEMM_REL_TOL * (k as f32).sqrt() + GEMM_REL_TOL;
                    for (g, w) in got.iter().zip(&want) {
                        assert!((g - w).abs() <= tol, "{m}x{k}x{n} ta={ta} tb={tb} acc={accumulate}: {g} vs {w}");
                    }
                }
            }
        }
    }
}
