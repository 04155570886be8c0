//! Errors an app embedding the runtime can match on, for what the contract itself refuses. File-level errors
//! (which file, which tensor) wrap these with context.

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// A name that is not in its table: a weight format, an embedding storage, a named choice.
    #[error("unknown {what} {name:?} (known: {known})")]
    Unknown { what: &'static str, name: String, known: String },
    /// Dimensions a format cannot hold (K off the int4 group, K past the sparse indices' range).
    #[error("{0}")]
    Shape(String),
    /// Stored parts that disagree with each other (sparse counts, columns and values).
    #[error("{0}")]
    Inconsistent(String),
}

impl Error {
    pub fn unknown<'a>(what: &'static str, name: &str, known: impl IntoIterator<Item = &'a str>) -> Self {
        Self::Unknown { what, name: name.to_string(), known: known.into_iter().collect::<Vec<_>>().join(", ") }
    }
}
