//! Typed config.json: the model's own fields with shrink's sections (`config.rs`), the `quantization` section
//! (`quant.rs`), each layer's attention (`attention.rs`) and the lineage record every stage appends to (`lineage.rs`).

pub mod attention;
pub mod config;
pub mod lineage;
pub mod quant;

pub use attention::{Attention, FeatureMap, PositionExtension};
pub use lineage::Step;
pub use quant::{Activations, AttentionPrecision, QuantSection, Scheme, SchemeRecord};
