//! The C functions called from Rust as C would call them: results equal the engine's, and every bad argument is a
//! status code with a message naming it, with nothing written.

mod common;

use std::ffi::{c_char, CStr, CString};
use std::ptr::{null, null_mut};
use std::sync::OnceLock;

use common::{assert_close, classifier, engine, minilm};
use shrink::*;

const INVALID: i32 = Status::InvalidArgument as i32;
const SMALL: i32 = Status::BufferTooSmall as i32;
/// Written into output buffers before a failing call, to see it wrote nothing.
const SENTINEL: f32 = -7.5;

fn load(dir: &std::path::Path, threads: i32) -> *mut Model {
    let dir = CString::new(dir.to_str().unwrap()).unwrap();
    unsafe { shrink_load(dir.as_ptr(), threads) }
}

/// One MiniLM handle (1 thread) shared by the tests, as a C app shares one across its threads.
fn minilm_handle() -> *mut Model {
    static HANDLE: OnceLock<&'static Model> = OnceLock::new();
    let model = *HANDLE.get_or_init(|| unsafe { load(&minilm(), 1).as_ref() }.expect("MiniLM loads"));
    model as *const Model as *mut Model
}

fn last() -> (i32, String) {
    (shrink_last_error_code(), unsafe { CStr::from_ptr(shrink_last_error_message()) }.to_str().unwrap().to_owned())
}

/// `code`, and a last error of that code whose message contains `part`.
fn assert_fails(code: i32, want: i32, part: &str) {
    let (last_code, message) = last();
    assert_eq!((code, last_code), (want, want), "{message}");
    assert!(message.contains(part), "{message:?} should say {part:?}");
}

fn c_texts(texts: &[&str]) -> (Vec<CString>, Vec<*const c_char>) {
    let owned: Vec<CString> = texts.iter().map(|t| CString::new(*t).unwrap()).collect();
    let ptrs = owned.iter().map(|c| c.as_ptr()).collect();
    (owned, ptrs)
}

fn embed(model: *mut Model, texts: &[*const c_char], out: &mut [f32]) -> i32 {
    unsafe { shrink_embed(model, texts.as_ptr(), texts.len(), out.as_mut_ptr(), out.len()) }
}

#[test]
fn load_errors_name_the_problem() {
    let null_dir = unsafe { shrink_load(null(), 0) };
    assert!(null_dir.is_null());
    assert_fails(shrink_last_error_code(), INVALID, "dir is NULL");
    assert!(load("no/such/model".as_ref(), 0).is_null());
    assert_fails(shrink_last_error_code(), Status::Load as i32, "no/such/model: no such model folder");
    let empty = tempfile::tempdir().unwrap();
    assert!(load(empty.path(), 0).is_null());
    assert_fails(shrink_last_error_code(), Status::Load as i32, "config.json");
    assert!(load(&minilm(), -1).is_null());
    assert_fails(shrink_last_error_code(), INVALID, "threads is -1");
    assert!(load(&minilm(), i32::MAX).is_null());
    assert_fails(shrink_last_error_code(), INVALID, "worker threads: at most");
    let not_utf8 = [b'm', 0xc3, 0x28, 0];
    assert!(unsafe { shrink_load(not_utf8.as_ptr().cast(), 0) }.is_null());
    assert_fails(shrink_last_error_code(), INVALID, "dir is not valid UTF-8 (byte 1)");
}

#[test]
fn embed_matches_the_engine() {
    let texts = ["A man is playing a guitar.", "Tokyo is the capital of Japan.", "ok"];
    let (_owned, ptrs) = c_texts(&texts);
    let model = minilm_handle();
    let dim = unsafe { shrink_embedding_dim(model) };
    assert_eq!((dim, unsafe { shrink_hidden_size(model) }), (384, 384));
    let mut out = vec![SENTINEL; texts.len() * dim + 1];
    assert_eq!(embed(model, &ptrs, &mut out), 0, "{:?}", last());
    assert_eq!(last(), (0, String::new()));
    assert_close(&out[..texts.len() * dim], &engine(&minilm(), 1).embed(&texts).unwrap().concat(), "embeddings");
    assert_eq!(out[texts.len() * dim], SENTINEL, "wrote past n x dim");
}

#[test]
fn embed_checks_every_argument() {
    let model = minilm_handle();
    let (_owned, ptrs) = c_texts(&["one", "two"]);
    let mut out = vec![SENTINEL; 2 * 384];
    let unchanged = |out: &[f32]| assert!(out.iter().all(|&v| v == SENTINEL), "a failed call wrote its output");

    assert_fails(embed(null_mut(), &ptrs, &mut out), INVALID, "model is NULL");
    assert_fails(unsafe { shrink_embed(model, null(), 2, out.as_mut_ptr(), out.len()) }, INVALID, "texts is NULL");
    assert_fails(embed(model, &[ptrs[0], null()], &mut out), INVALID, "texts[1] is NULL");
    let bad = [b'a', 0xff, 0];
    assert_fails(embed(model, &[ptrs[0], bad.as_ptr().cast()], &mut out), INVALID, "texts[1] is not valid UTF-8 (byte 1)");
    assert_fails(embed(model, &[ptrs[0], c"  ".as_ptr()], &mut out), INVALID, "texts[1] is empty or only whitespace");
    assert_fails(embed(model, &ptrs, &mut out[..767]), SMALL, "out holds 767 values but 2 texts x 384 needs 768");
    assert_fails(unsafe { shrink_embed(model, ptrs.as_ptr(), 2, null_mut(), 768) }, INVALID, "out is NULL");
    assert_fails(embed(model, &[], &mut out), INVALID, "empty batch");
    unchanged(&out);
}

#[test]
fn classify_needs_a_head() {
    let model = minilm_handle();
    let (_owned, ptrs) = c_texts(&["a text"]);
    assert_eq!(unsafe { shrink_num_labels(model) }, 0);
    let code = unsafe { shrink_classify(model, ptrs.as_ptr(), 1, null_mut(), 0, null_mut()) };
    assert_fails(code, Status::NoHead as i32, "all-MiniLM-L6-v2: this model has no classification head");
    assert!(unsafe { shrink_label_name(model, 0) }.is_null());
    assert_fails(shrink_last_error_code(), INVALID, "label 0: the model has 0 labels");
}

#[test]
fn classify_matches_the_engine() {
    let texts = ["The government announced a new election date.", "A new phone with a faster chip went on sale."];
    let (_owned, ptrs) = c_texts(&texts);
    let model = load(&classifier(), 2);
    assert!(!model.is_null(), "{:?}", last());
    let mut rust = engine(&classifier(), 2);
    let names = rust.labels().unwrap();
    let l = unsafe { shrink_num_labels(model) };
    assert_eq!(l, names.len());
    for (i, name) in names.iter().enumerate() {
        assert_eq!(unsafe { CStr::from_ptr(shrink_label_name(model, i)) }.to_str().unwrap(), name);
    }
    let (mut probs, mut labels) = (vec![SENTINEL; 2 * l], vec![-1i32; 2]);
    let classify = |probs: &mut [f32], labels: *mut i32| unsafe { shrink_classify(model, ptrs.as_ptr(), 2, probs.as_mut_ptr(), probs.len(), labels) };

    assert_fails(classify(&mut probs[..2 * l - 1], labels.as_mut_ptr()), SMALL, &format!("probs holds {} values but 2 texts x {l} labels needs {}", 2 * l - 1, 2 * l));
    assert_eq!((probs[0], labels[0]), (SENTINEL, -1));
    assert_eq!(classify(&mut probs, labels.as_mut_ptr()), 0);
    let want = rust.classify(&texts).unwrap();
    assert_close(&probs, &want.iter().flat_map(|p| p.probs.clone()).collect::<Vec<_>>(), "probs");
    assert_eq!(labels, want.iter().map(|p| p.index as i32).collect::<Vec<_>>());
    // labels is optional.
    assert_eq!(classify(&mut probs, null_mut()), 0);
    unsafe { shrink_free(model) };
}

#[test]
fn forward_matches_the_engine_and_checks_its_arguments() {
    let model = minilm_handle();
    let mut rust = engine(&minilm(), 1);
    let batch = rust.tokenizer.batch(&["a short one", "a somewhat longer second sentence"]).unwrap();
    let (b, t) = (batch.b, batch.t);
    let mut out = vec![SENTINEL; b * t * 384];
    let forward = |ids: &[u32], mask: &[u32], b: usize, t: usize, out: &mut [f32]| unsafe {
        shrink_forward(model, ids.as_ptr(), mask.as_ptr(), b, t, out.as_mut_ptr(), out.len())
    };

    assert_fails(forward(&batch.ids, &batch.mask, b, t, &mut out[..10]), SMALL, &format!("out holds 10 values but {b} x {t} tokens x 384 needs {}", b * t * 384));
    let mut outside = batch.ids.clone();
    outside[t + 1] = 1_000_000;
    assert_fails(forward(&outside, &batch.mask, b, t, &mut out), INVALID, "token id 1000000 (sequence 1, position 1) is outside the vocabulary");
    let mut mask = batch.mask.clone();
    mask[3] = 2;
    assert_fails(forward(&batch.ids, &mask, b, t, &mut out), INVALID, "mask value 2 at position 3");
    assert_fails(forward(&[], &[], usize::MAX, 2, &mut out), INVALID, "batch x seq = 18446744073709551615 x 2 overflows");
    assert_fails(forward(&[], &[], 0, t, &mut out), INVALID, "empty batch");
    assert_fails(unsafe { shrink_forward(model, batch.ids.as_ptr(), null(), b, t, out.as_mut_ptr(), out.len()) }, INVALID, "mask is NULL");
    assert!(out.iter().all(|&v| v == SENTINEL), "a failed call wrote its output");

    assert_eq!(forward(&batch.ids, &batch.mask, b, t, &mut out), 0);
    assert_close(&out, rust.forward(&batch.ids, &batch.mask, b, t).unwrap(), "hidden state");
}

#[test]
fn one_handle_serves_many_threads() {
    let texts = ["first thread's text", "a second, different text"];
    let (_owned, ptrs) = c_texts(&texts);
    let want = engine(&minilm(), 1).embed(&texts).unwrap().concat();
    // Raw pointers are not Send; addresses are, and the handle is documented as shareable.
    let (model, ptrs) = (minilm_handle() as usize, ptrs.iter().map(|&p| p as usize).collect::<Vec<_>>());
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                let ptrs: Vec<*const c_char> = ptrs.iter().map(|&p| p as *const c_char).collect();
                for _ in 0..3 {
                    let mut out = vec![0f32; want.len()];
                    assert_eq!(embed(model as *mut Model, &ptrs, &mut out), 0, "{:?}", last());
                    assert_close(&out, &want, "embedding from a thread");
                }
            });
        }
    });
}

#[test]
fn the_last_error_is_per_thread_and_cleared_by_success() {
    assert_eq!(unsafe { shrink_embedding_dim(null()) }, 0);
    assert_eq!(last(), (INVALID, "model is NULL".to_owned()));
    std::thread::spawn(|| assert_eq!(last(), (0, String::new()))).join().unwrap();
    assert_eq!(last().0, INVALID, "another thread's calls leave this one's error");
    assert_eq!(unsafe { shrink_embedding_dim(minilm_handle()) }, 384);
    assert_eq!(last(), (0, String::new()));
}

#[test]
fn free_takes_null_and_version_is_the_crates() {
    unsafe { shrink_free(null_mut()) };
    assert_eq!(last().0, 0);
    assert_eq!(unsafe { CStr::from_ptr(shrink_version()) }.to_str().unwrap(), env!("CARGO_PKG_VERSION"));
}
