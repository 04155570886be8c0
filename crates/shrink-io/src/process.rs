//! Process-wide settings a binary makes before any work: the allocator's thresholds, the thread count, `--no-mmap`.

use anyhow::Result;

use crate::model;

/// Call first in `main`, before any thread exists: `threads` is `--threads` (None: every core), `mmap` false for
/// `--no-mmap`. Returns the thread count the numeric work uses.
pub fn setup(threads: Option<usize>, mmap: bool) -> Result<usize> {
    keep_freed_memory();
    let n = model::threads(threads)?;
    if threads.is_some() {
        // Before any thread pool exists: candle's matmul and rayon both read it.
        std::env::set_var("RAYON_NUM_THREADS", n.to_string());
    }
    model::set_map_weights(mmap);
    Ok(n)
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
