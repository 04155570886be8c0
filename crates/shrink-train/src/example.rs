//! The one example type every training stage reads: a tokenised text with its label index, if it has one.

#[derive(Clone, Debug, PartialEq)]
pub struct Example {
    pub ids: Vec<u32>,
    /// Index into the model's labels; None for unlabelled text (task-agnostic distillation).
    pub label: Option<u32>,
    /// The text itself: QAT calibrates its static activation ranges on the runtime, which tokenises.
    pub text: String,
}
