//! Named choices live with the on-disk contract (`shrink_format::choice`), since config.json records them too.

pub use shrink_format::choice::Choice;
pub use shrink_format::choices;
