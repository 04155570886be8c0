//! Inference into buffers the caller owns: sentence embeddings, classification, the raw forward pass. Arguments
//! are checked before the model runs, and nothing is written unless the call succeeds.

use std::ffi::c_char;

use crate::args::{self, count};
use crate::model::{self, Model};
use crate::status::{status, Failure, Status};

fn runtime(err: anyhow::Error) -> Failure {
    Failure::engine(err, Status::Runtime)
}

/// Sentence embeddings of `n` texts (mean-pooled over their tokens, L2-normalised) into `out`, n x
/// `shrink_embedding_dim` floats row-major; `out_len` is the number of floats `out` holds. Texts longer than the
/// model's maximum length are cut. Returns 0 or a negative `shrink_status` (BUFFER_TOO_SMALL, INVALID_ARGUMENT for
/// NULL pointers, n = 0, a blank text or one that is not UTF-8, NON_FINITE, ...). Waits while another thread runs this model.
///
/// # Safety
/// `model` is NULL or a live handle; `texts` is NULL or points to `n` pointers, each NULL or a NUL-terminated
/// string; `out` is NULL or points to `out_len` writable floats that overlap none of the inputs.
#[no_mangle]
pub unsafe extern "C" fn shrink_embed(model: *mut Model, texts: *const *const c_char, n: usize, out: *mut f32, out_len: usize) -> i32 {
    status(|| {
        let model = model::get(model)?;
        let texts = args::texts(texts, n)?;
        let dim = model.hidden();
        let out = args::output(out, out_len, count(n, dim, "n x dim")?, "out", &format!("{n} texts x {dim}"))?;
        let mut engine = model.engine()?;
        let batch = engine.tokenizer.batch(&texts).map_err(runtime)?;
        out.copy_from_slice(engine.embed_batch(&batch).map_err(runtime)?);
        Ok(())
    })
}

/// Classifies `n` texts with the model's head: the softmax over its labels into `probs` (n x `shrink_num_labels`
/// floats row-major, `probs_len` the floats it holds) and, unless `labels` is NULL, the index of each text's most
/// likely label into `labels` (n values; names from `shrink_label_name`). A model without a head gives NO_HEAD.
///
/// # Safety
/// As `shrink_embed`, with `probs` for `out`; `labels` is NULL or points to `n` writable int32s.
#[no_mangle]
pub unsafe extern "C" fn shrink_classify(
    model: *mut Model,
    texts: *const *const c_char,
    n: usize,
    probs: *mut f32,
    probs_len: usize,
    labels: *mut i32,
) -> i32 {
    status(|| {
        let model = model::get(model)?;
        let texts = args::texts(texts, n)?;
        let l = model.num_labels();
        let probs = args::output(probs, probs_len, count(n, l, "n x labels")?, "probs", &format!("{n} texts x {l} labels"))?;
        let labels = match labels.is_null() {
            true => None,
            false => Some(args::output(labels, n, n, "labels", &format!("{n} texts"))?),
        };
        // A model without a head fails here, with a message naming its folder.
        let predictions = model.engine()?.classify(&texts).map_err(runtime)?;
        for (i, p) in predictions.iter().enumerate() {
            probs[i * l..(i + 1) * l].copy_from_slice(&p.probs);
        }
        if let Some(labels) = labels {
            labels.iter_mut().zip(&predictions).for_each(|(out, p)| *out = p.index as i32);
        }
        Ok(())
    })
}

/// The raw forward pass: the last hidden state for token ids and attention mask (each batch x seq row-major,
/// mask 1 = token, 0 = padding; ids from the model's own tokenizer) into `out`, batch x seq x `shrink_hidden_size`
/// floats row-major (`out_len` the floats it holds). No pooling, no normalisation.
///
/// # Safety
/// `model` is NULL or a live handle; `ids` and `mask` are NULL or point to batch x seq values each; `out` is NULL
/// or points to `out_len` writable floats that overlap neither.
#[no_mangle]
pub unsafe extern "C" fn shrink_forward(
    model: *mut Model,
    ids: *const u32,
    mask: *const u32,
    batch: usize,
    seq: usize,
    out: *mut f32,
    out_len: usize,
) -> i32 {
    status(|| {
        let model = model::get(model)?;
        let tokens = count(batch, seq, "batch x seq")?;
        let (ids, mask) = (args::input(ids, tokens, "ids")?, args::input(mask, tokens, "mask")?);
        let c = model.hidden();
        let shape = format!("{batch} x {seq} tokens x {c}");
        let out = args::output(out, out_len, count(tokens, c, "batch x seq x hidden")?, "out", &shape)?;
        out.copy_from_slice(model.engine()?.forward(ids, mask, batch, seq).map_err(runtime)?);
        Ok(())
    })
}
