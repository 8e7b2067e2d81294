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

    /// Every tensor the file holds, in the file's own naming.
    fn stored_names(&self) -> Vec<String>;

    /// The file's name for the tensor GGUF calls `name`.
    fn stored_name(&self, name: &str) -> Option<String>;
}

/// A source that remembers every tensor it was asked for.
pub struct Recording<'a> {
    inner: &'a dyn TensorSource,
    asked: std::cell::RefCell<Vec<String>>,
}

impl<'a> Recording<'a> {
    pub fn new(inner: &'a dyn TensorSource) -> Recording<'a> {
        Recording { inner, asked: Default::default() }
    }

    /// Refuses a file holding a tensor that was never asked for (nor is in
    /// `also_used`): the model it describes would compute with it, and Sift
    /// would silently compute something else. Buffers derived from the
    /// config (`rotary_emb.inv_freq`) are not weights and pass.
    pub fn check_all_used(&self, also_used: &[&str], path: &std::path::Path) -> Result<()> {
        let asked = self.asked.borrow();
        let used: std::collections::HashSet<String> =
            asked.iter().map(String::as_str).chain(also_used.iter().copied()).filter_map(|n| self.inner.stored_name(n)).collect();
        let mut unused: Vec<String> =
            self.inner.stored_names().into_iter().filter(|n| !used.contains(n) && !n.ends_with("rotary_emb.inv_freq")).collect();
        unused.sort();
        match unused.as_slice() {
            [] => Ok(()),
            [first, rest @ ..] => {
                let more = if rest.is_empty() { String::new() } else { format!(" (and {} more: {})", rest.len(), rest.iter().take(4).cloned().collect::<Vec<_>>().join(", ")) };
                Err(crate::SiftError::bad_file(path, format!("tensor '{first}'{more} is not used by Sift's llama; a model with it computes something Sift does not, so it is refused")))
            }
        }
    }
}

impl TensorSource for Recording<'_> {
    fn tensor(&self, name: &str) -> Result<Option<Tensor>> {
        self.asked.borrow_mut().push(name.to_string());
        self.inner.tensor(name)
    }

    fn stored_names(&self) -> Vec<String> {
        self.inner.stored_names()
    }

    fn stored_name(&self, name: &str) -> Option<String> {
        self.inner.stored_name(name)
    }
}

/// Validated `n_elements` of a shape: no zero-size trick, no overflow.
pub(crate) fn element_count(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d))
}
