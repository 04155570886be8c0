//! One walk over every parameter with its checkpoint name: used to save, count, and turn tensors into
//! trainable variables.

use candle_core::Tensor;

pub type ParamVisitor<'a> = dyn FnMut(&str, &mut Tensor) + 'a;
