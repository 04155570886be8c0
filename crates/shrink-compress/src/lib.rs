//! Post-training compression of a model folder: quantization with calibration, sensitivity and the
//! mixed-precision search (`quantize`), vocabulary trimming (`vocab`), and conversion to efficient attention with
//! longer position tables (`attention`).

pub mod attention;
pub mod decoder;
pub mod quantize;
pub mod vocab;
