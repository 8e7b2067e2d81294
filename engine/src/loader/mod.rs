//! Model files: GGUF (`gguf`, with `quant` and `kquants` for its block formats) and Hugging
//! Face directories (`hf`). Both yield tensors as f32 through [`TensorSource`],
//! named the GGUF way (`blk.3.attn_q.weight`) with PyTorch shapes ([out, in]).

pub mod gguf;
pub mod hf;
pub mod kquants;
pub mod quant;

use crate::error::Result;

/// A tensor read from a model file and converted to f32.
pub struct Tensor {
    /// Row-major shape, outermost first (PyTorch order: [out_features, in_features]).
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

pub trait TensorSource {
    /// The tensor called `name` (GGUF naming), or None when the file lacks it.
    fn tensor(&self, name: &str) -> Result<Option<Tensor>>;
}

/// Validated `n_elements` of a shape: no zero-size trick, no overflow.
pub(crate) fn element_count(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d))
}
