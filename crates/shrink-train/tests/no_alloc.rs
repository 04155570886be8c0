//! After its first call at a shape, the runtime's forward pass allocates nothing: a counting global allocator
//! watches repeated calls at that shape and at smaller ones, fp32, int8, int4, a pruned model (non-uniform
//! layers) and a sparse one, on one and two threads.

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use shrink_runtime::{Engine, Options};

fn out(p: &std::path::Path) -> shrink_format::folder::OutDir {
    shrink_format::folder::OutDir::new(p, &[], false).unwrap()
}

struct Counting;
static ALLOCS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator, only counting.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        System.alloc(l)
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        System.dealloc(p, l)
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        System.realloc(p, l, n)
    }
}

#[global_allocator]
static A: Counting = Counting;

fn model() -> PathBuf {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../assets/models/all-MiniLM-L6-v2");
    assert!(p.is_dir(), "{} missing: run scripts/fetch-assets.sh", p.display());
    p
}

fn batch(b: usize, t: usize) -> (Vec<u32>, Vec<u32>) {
    let ids = (0..b * t).map(|i| 1000 + (i as u32 * 7919) % 20000).collect();
    let mask = (0..b * t).map(|i| u32::from(i % t < t - i / t % 3)).collect(); // some padding
    (ids, mask)
}

fn allocations_after_warmup(dir: &std::path::Path, threads: usize) -> usize {
    let mut e = Engine::load(dir, Options { threads, max_len: None, ..Default::default() }).unwrap();
    let (ids, mask) = batch(3, 40);
    e.forward(&ids, &mask, 3, 40).unwrap();
    let (small_ids, small_mask) = batch(2, 17);
    let before = ALLOCS.load(Ordering::SeqCst);
    for _ in 0..3 {
        e.forward(&ids, &mask, 3, 40).unwrap();
        e.forward(&small_ids, &small_mask, 2, 17).unwrap();
    }
    ALLOCS.load(Ordering::SeqCst) - before
}

#[test]
fn forward_allocates_nothing_after_warmup() {
    let tmp = tempfile::tempdir().unwrap();
    use shrink_compress::quantize::{quantize, Options, Scheme, Source};
    let src = Source::open(&model(), 1, None).unwrap();
    let calib: Vec<String> = ["A short calibration text.", "Markets rose as the central bank held rates."].map(String::from).into();
    let mut dirs = vec![model()];
    for (name, scheme, smooth) in [("int8", Scheme::Int8Dynamic, None), ("static", Scheme::Int8Static, Some(0.5)), ("int4", Scheme::Int4, None)] {
        let dir = tmp.path().join(name);
        let mut opts = Options::new(scheme);
        opts.smooth_alpha = smooth;
        quantize(&src, &out(&dir), &opts, &calib).unwrap();
        dirs.push(dir);
    }
    // Pruned: layers of different widths share buffers planned for the widest.
    let opts = shrink_train::prune::Options {
        heads: 0.6, ffn: 0.4, layers: 0, schedule: shrink_train::prune::Schedule::Oneshot, steps: 1,
        method: shrink_train::prune::importance::Method::L2, batch: 8,
    };
    let pruned = shrink_train::prune::prune(shrink_model::Bert::load_dir(&model()).unwrap(), &[], &opts).unwrap();
    let heads = pruned.config.layer_heads.clone().unwrap();
    assert!(heads.iter().min() < heads.iter().max(), "want layers of different widths: {heads:?}");
    pruned.save_dir(&out(&tmp.path().join("pruned")), &model()).unwrap();
    dirs.push(tmp.path().join("pruned"));
    // Unstructured: the sparse kernel's transposed-activation buffer is reused like the others.
    let mut sparse = shrink_model::Bert::load_dir(&model()).unwrap();
    let sp = shrink_train::sparsify::Options::magnitude(0.8, shrink_train::sparsify::Scope::Layer);
    shrink_train::sparsify::oneshot(&mut sparse, &sp).unwrap();
    sparse.save_dir(&out(&tmp.path().join("zeros")), &model()).unwrap();
    quantize(&Source::open(&tmp.path().join("zeros"), 1, None).unwrap(), &out(&tmp.path().join("sparse")), &Options::new(Scheme::Sparse), &[]).unwrap();
    dirs.push(tmp.path().join("sparse"));
    for dir in dirs {
        for threads in [1, 2] {
            let n = allocations_after_warmup(&dir, threads);
            assert_eq!(n, 0, "{} on {threads} thread(s): {n} allocations in 6 warm calls", dir.display());
        }
    }
}
