//! C arguments to Rust values, checked first: each failure names the argument and what is wrong with it, so that a
//! bad pointer or size is an error code rather than undefined behaviour wherever a check can see it.

use std::ffi::{c_char, CStr};

use crate::status::{Failure, Status};

fn invalid(message: String) -> Failure {
    Failure::new(Status::InvalidArgument, message)
}

/// `a * b` values, or an error naming the shape when that overflows.
pub(crate) fn count(a: usize, b: usize, shape: &str) -> Result<usize, Failure> {
    a.checked_mul(b).ok_or_else(|| invalid(format!("{shape} = {a} x {b} overflows")))
}

/// Pointer checks shared by inputs and outputs: NULL, alignment, a length no slice can have.
fn check<T>(ptr: *const T, len: usize, name: &str) -> Result<(), Failure> {
    if ptr.is_null() {
        return Err(invalid(format!("{name} is NULL")));
    }
    if !ptr.is_aligned() {
        return Err(invalid(format!("{name} ({ptr:p}) is not aligned to {} bytes", align_of::<T>())));
    }
    if len.checked_mul(size_of::<T>()).is_none_or(|bytes| bytes > isize::MAX as usize) {
        return Err(invalid(format!("{name}: {len} values do not fit in memory")));
    }
    Ok(())
}

/// The `len` values at `ptr` (NULL is fine when `len` is 0).
///
/// # Safety
/// A non-NULL `ptr` points to at least `len` initialised values that nothing writes while the slice lives.
pub(crate) unsafe fn input<'a, T>(ptr: *const T, len: usize, name: &str) -> Result<&'a [T], Failure> {
    if len == 0 {
        return Ok(&[]);
    }
    check(ptr, len, name)?;
    Ok(std::slice::from_raw_parts(ptr, len))
}

/// The first `needed` of the `len` values at `ptr`, after checking `len` holds them (`shape` says what `needed`
/// counts, for the message).
///
/// # Safety
/// A non-NULL `ptr` points to at least `len` writable values that nothing else reads or writes while the slice lives.
pub(crate) unsafe fn output<'a, T>(ptr: *mut T, len: usize, needed: usize, name: &str, shape: &str) -> Result<&'a mut [T], Failure> {
    if len < needed {
        return Err(Failure::new(Status::BufferTooSmall, format!("{name} holds {len} values but {shape} needs {needed}")));
    }
    if needed == 0 {
        return Ok(&mut []);
    }
    check(ptr, needed, name)?;
    Ok(std::slice::from_raw_parts_mut(ptr, needed))
}

/// A NUL-terminated UTF-8 string.
///
/// # Safety
/// A non-NULL `ptr` points to a NUL-terminated string that lives as long as the result.
pub(crate) unsafe fn text<'a>(ptr: *const c_char, name: &str) -> Result<&'a str, Failure> {
    if ptr.is_null() {
        return Err(invalid(format!("{name} is NULL")));
    }
    CStr::from_ptr(ptr).to_str().map_err(|e| invalid(format!("{name} is not valid UTF-8 (byte {})", e.valid_up_to())))
}

/// `n` strings from a C array of pointers, none of them blank.
///
/// # Safety
/// A non-NULL `texts` points to `n` pointers, each NULL or a NUL-terminated string that lives as long as the result.
pub(crate) unsafe fn texts<'a>(texts: *const *const c_char, n: usize) -> Result<Vec<&'a str>, Failure> {
    let ptrs = input(texts, n, "texts")?;
    let texts = ptrs.iter().enumerate().map(|(i, &p)| text(p, &format!("texts[{i}]"))).collect::<Result<Vec<_>, _>>()?;
    // The tokenizer refuses these too, but without saying which text (and untyped, so it would read as RUNTIME).
    match texts.iter().position(|t| t.trim().is_empty()) {
        Some(i) => Err(invalid(format!("texts[{i}] is empty or only whitespace: nothing to encode"))),
        None => Ok(texts),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err<T: std::fmt::Debug>(r: Result<T, Failure>) -> (Status, String) {
        let f = r.unwrap_err();
        (f.status, f.message)
    }

    #[test]
    fn each_bad_argument_is_named() {
        unsafe {
            assert_eq!(err(input::<u32>(std::ptr::null(), 2, "ids")), (Status::InvalidArgument, "ids is NULL".into()));
            assert!(input::<u32>(std::ptr::null(), 0, "ids").unwrap().is_empty());
            let words = [0u32; 4];
            let odd = (words.as_ptr() as *const u8).add(1) as *const u32;
            assert!(err(input(odd, 1, "mask")).1.starts_with("mask (0x"));
            let huge = input(words.as_ptr(), usize::MAX / 2, "ids");
            assert_eq!(err(huge).1, format!("ids: {} values do not fit in memory", usize::MAX / 2));
            let mut out = [0f32; 3];
            let small = output(out.as_mut_ptr(), 3, 4, "out", "2 texts x 2");
            assert_eq!(err(small), (Status::BufferTooSmall, "out holds 3 values but 2 texts x 2 needs 4".into()));
            assert_eq!(output(out.as_mut_ptr(), 3, 2, "out", "1 x 2").unwrap().len(), 2);
            let bad = [0x66u8, 0xff, 0];
            let texts_in = [c"ok".as_ptr(), bad.as_ptr().cast(), std::ptr::null()];
            assert_eq!(err(texts(texts_in.as_ptr(), 2)).1, "texts[1] is not valid UTF-8 (byte 1)");
            assert_eq!(err(texts(texts_in.as_ptr().add(2), 1)).1, "texts[0] is NULL");
            assert_eq!(texts(texts_in.as_ptr(), 1).unwrap(), ["ok"]);
            let blank = [c"ok".as_ptr(), c" \n".as_ptr()];
            assert_eq!(err(texts(blank.as_ptr(), 2)).1, "texts[1] is empty or only whitespace: nothing to encode");
        }
        assert_eq!(err(count(usize::MAX, 2, "batch x seq")).1, format!("batch x seq = {} x 2 overflows", usize::MAX));
    }
}
