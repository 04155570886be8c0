//! Post-training compression of a model folder: quantization with calibration, sensitivity and the
//! mixed-precision search (`quantize`), and vocabulary trimming (`vocab`).

pub mod decoder;
pub mod quantize;
pub mod vocab;
