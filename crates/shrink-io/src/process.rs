//! Process-wide settings a binary makes before any work: the allocator's thresholds, the thread count, `--no-mmap`.

use anyhow::Result;

use crate::model;

/// Call first in `main`, before any thread exists: `threads` is `--threads` (None: every core), `mmap` false for
/// `--no-mmap`. Returns the thread count the numeric work uses.
pub fn setup(threads: Option<usize>, mmap: bool) -> Result<usize> {
    keep_freed_memory();
    flush_denormals();
    let n = model::threads(threads)?;
    if threads.is_some() {
        // Before any thread pool exists: candle's matmul and rayon both read it.
        std::env::set_var("RAYON_NUM_THREADS", n.to_string());
    }
    model::set_map_weights(mmap);
    Ok(n)
}

/// Flushes denormal floats to zero (results: FTZ; inputs: DAZ) in this thread and every thread started after it
/// (Linux threads inherit MXCSR). Backprop through short, padded SST-2 sentences made some f32 GEMM inputs
/// denormal, and each product with one takes a microcode assist: fine-tuning ran ~8 s per 16-row step, not ~0.5 s.
fn flush_denormals() {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: sets only the FTZ (bit 15) and DAZ (bit 6) control bits of this thread's MXCSR.
    #[allow(deprecated)] // _mm_getcsr / _mm_setcsr: the replacement is inline asm
    unsafe {
        use std::arch::x86_64::{_mm_getcsr, _mm_setcsr};
        _mm_setcsr(_mm_getcsr() | (1 << 15) | (1 << 6));
    }
}

/// Training allocates and frees hundreds of MB of tensors per step. By default glibc hands blocks over 128 KB back
/// to the kernel on free, and each new one then costs page faults and zeroing (a third of a training step).
fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator thresholds; called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20); // glibc's maximum
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
    }
}

/// Returns the heap's free pages to the system. `keep_freed_memory` keeps them for steady-state work; a loader
/// calls this once its temporaries are gone, so they do not stay resident beside the model.
pub fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only hands free heap pages back to the kernel.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use std::hint::black_box;

    #[test]
    fn denormals_are_flushed_here_and_in_threads_started_after() {
        let tiny = || black_box(f32::MIN_POSITIVE) / black_box(4.0f32); // denormal without FTZ
        let input = f32::from_bits(1); // the smallest denormal, read as zero with DAZ
        std::thread::spawn(move || {
            assert!(tiny() > 0.0, "denormals are kept by default");
            super::flush_denormals();
            assert_eq!(tiny(), 0.0);
            assert_eq!(black_box(input) * black_box(2.0f32), 0.0);
            let child = std::thread::spawn(move || (tiny(), black_box(input) * black_box(1e30f32))).join().unwrap();
            assert_eq!(child, (0.0, 0.0), "a thread started later inherits the flags");
        })
        .join()
        .unwrap();
    }
}
