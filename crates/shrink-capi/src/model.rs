//! The model handle: load and free it, and what it can tell without running (sizes, labels).

use std::ffi::{c_char, CString};
use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use shrink_runtime::{Engine, Options};

use crate::args;
use crate::status::{catch, Failure, Status};

/// A loaded model (`shrink_model` in C), opaque to C. The engine sits behind a mutex: calls on one handle from
/// several threads are safe and run one at a time; for parallel inference, load one handle per thread.
pub struct Model {
    engine: Mutex<Engine>,
    /// NUL-terminated copies of the label names, so `shrink_label_name` can hand out pointers that live with the handle.
    labels: Vec<CString>,
    hidden: usize,
}

// The handle is shared across threads by C callers: keep that sound if the engine's parts change.
const _: fn() = || {
    fn shared<T: Send + Sync>() {}
    shared::<Model>();
};

impl Model {
    /// The engine, locked for one call; a model an earlier call panicked in is refused, its state unknown.
    pub(crate) fn engine(&self) -> Result<MutexGuard<'_, Engine>, Failure> {
        self.engine
            .lock()
            .map_err(|_| Failure::new(Status::Panic, "an earlier call on this model panicked: free it and load it again"))
    }

    pub(crate) fn hidden(&self) -> usize {
        self.hidden
    }

    pub(crate) fn num_labels(&self) -> usize {
        self.labels.len()
    }
}

/// The model behind a handle from C.
///
/// # Safety
/// A non-NULL `ptr` came from `shrink_load` and has not been freed.
pub(crate) unsafe fn get<'a>(ptr: *const Model) -> Result<&'a Model, Failure> {
    ptr.as_ref().ok_or_else(|| Failure::new(Status::InvalidArgument, "model is NULL"))
}

/// Loads a model folder: config.json, model.safetensors and tokenizer.json, as fp32 Hugging Face weights or a
/// folder written by `shrink` (quantized, pruned, fine-tuned). `threads` is the number of worker threads the model
/// computes with (0 = the default, 1; at most 4 x the cores). The weights file is memory-mapped: it must not be
/// rewritten in place while the model is loaded. Returns NULL on error (see `shrink_last_error_code`: LOAD for a
/// folder that cannot be read, INVALID_ARGUMENT for a bad argument).
///
/// # Safety
/// `dir` is NULL or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn shrink_load(dir: *const c_char, threads: i32) -> *mut Model {
    catch(|| {
        let dir = args::text(dir, "dir")?;
        let threads = usize::try_from(threads)
            .map_err(|_| Failure::new(Status::InvalidArgument, format!("threads is {threads}: expected 0 (the default) or more")))?;
        let engine = Engine::load(Path::new(dir), Options { threads, ..Options::default() }).map_err(|e| Failure::engine(e, Status::Load))?;
        // Label names come from config.json; an inner NUL, which C could not read past, is dropped.
        let labels = engine.labels().unwrap_or_default().into_iter().map(|l| CString::new(l.replace('\0', "")).unwrap_or_default()).collect();
        let hidden = engine.config.hidden_size;
        Ok(Box::into_raw(Box::new(Model { engine: Mutex::new(engine), labels, hidden })))
    })
    .unwrap_or(std::ptr::null_mut())
}

/// Frees a model and everything it holds (its threads, buffers, label names). NULL is a no-op.
///
/// # Safety
/// `model` is NULL or came from `shrink_load` and has not been freed; no other thread uses it during or after.
#[no_mangle]
pub unsafe extern "C" fn shrink_free(model: *mut Model) {
    let _ = catch(|| {
        if !model.is_null() {
            drop(Box::from_raw(model));
        }
        Ok(())
    });
}

/// Values per sentence embedding (`shrink_embed` writes n x this); 0 if `model` is NULL.
///
/// # Safety
/// `model` is NULL or a live handle from `shrink_load`.
#[no_mangle]
pub unsafe extern "C" fn shrink_embedding_dim(model: *const Model) -> usize {
    catch(|| Ok(get(model)?.hidden)).unwrap_or(0)
}

/// Values per token of the last hidden state (`shrink_forward` writes batch x seq x this); 0 if `model` is NULL.
/// The same number as `shrink_embedding_dim` (embeddings are mean-pooled hidden states), named for its use.
///
/// # Safety
/// `model` is NULL or a live handle from `shrink_load`.
#[no_mangle]
pub unsafe extern "C" fn shrink_hidden_size(model: *const Model) -> usize {
    catch(|| Ok(get(model)?.hidden)).unwrap_or(0)
}

/// Labels of the model's classification head; 0 for a model without one (or if `model` is NULL).
///
/// # Safety
/// `model` is NULL or a live handle from `shrink_load`.
#[no_mangle]
pub unsafe extern "C" fn shrink_num_labels(model: *const Model) -> usize {
    catch(|| Ok(get(model)?.labels.len())).unwrap_or(0)
}

/// The name of label `i` (0-based, as `shrink_classify` numbers them), or NULL (INVALID_ARGUMENT) if `i` is not
/// below `shrink_num_labels`. The string belongs to the model and lives until `shrink_free`.
///
/// # Safety
/// `model` is NULL or a live handle from `shrink_load`.
#[no_mangle]
pub unsafe extern "C" fn shrink_label_name(model: *const Model, i: usize) -> *const c_char {
    catch(|| {
        let labels = &get(model)?.labels;
        let name = labels.get(i).ok_or_else(|| Failure::new(Status::InvalidArgument, format!("label {i}: the model has {} labels", labels.len())))?;
        Ok(name.as_ptr())
    })
    .unwrap_or(std::ptr::null())
}
